"""A loopback stand-in of the S3 API for one bucket: ListObjectsV2, and HEAD/GET of objects with
ranges and MD5 ETags (path-style addressing, as S3 clients use for an IP endpoint). Requests must
be signed with `access_key` when one is set; the signature itself is not checked."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from xml.sax.saxutils import escape

from aiohttp import web

from inferfleet.localcluster.file_standin import ThreadedServer, Traffic, stream_file

_LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
_XML = '<?xml version="1.0" encoding="UTF-8"?>'


class S3Standin:
    def __init__(self, bucket: str, objects: Mapping[str, bytes], *, access_key: str | None = None) -> None:
        self.bucket, self.objects, self.access_key = bucket, dict(objects), access_key
        self.traffic = Traffic()
        app = web.Application()
        app.router.add_get("/{bucket}", self._list)
        app.router.add_get("/{bucket}/", self._list)
        app.router.add_route("*", "/{bucket}/{key:.+}", self._object)
        self._server = ThreadedServer(app)

    def start(self) -> str:
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _refused(self, request: web.Request) -> web.Response | None:
        signed = f"Credential={self.access_key}/" in request.headers.get("Authorization", "")
        if self.access_key and not signed:
            return _error(403, "AccessDenied", "Access Denied")
        if request.match_info["bucket"] != self.bucket:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist")
        return None

    async def _list(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        prefix = request.query.get("prefix", "")
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><LastModified>{_LAST_MODIFIED}</LastModified>"
            f"<ETag>&quot;{hashlib.md5(self.objects[k]).hexdigest()}&quot;</ETag>"
            f"<Size>{len(self.objects[k])}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for k in keys
        )
        body = (
            f"{_XML}"
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(self.bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
        )
        return web.Response(body=body.encode(), content_type="application/xml")

    async def _object(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        key = request.match_info["key"]
        if key not in self.objects:
            return _error(404, "NoSuchKey", "The specified key does not exist.")
        data = self.objects[key]
        headers = {"ETag": f'"{hashlib.md5(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        headers["Last-Modified"] = "Thu, 01 Jan 2026 00:00:00 GMT"
        return await stream_file(request, key, data, self.traffic, headers)


def _error(status: int, code: str, message: str) -> web.Response:
    body = f"{_XML}<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return web.Response(status=status, body=body.encode(), content_type="application/xml")
