"""moto's S3 server (a real S3 implementation: signatures, ranges, listing, multipart ETags) on
loopback, for `inferfleet fetch-model` tests, behind a pass-through that counts the object bytes
it relays and can throttle or corrupt them (`Traffic`, as the other stand-ins).

moto runs from its own environment (hack/moto-requirements.txt: botocore and kubernetes want
different python-dateutil majors), built by hack/setup.sh under the cache directory. The objects
are put with the minio client, the same library `fetch-model` reads them with.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from aiohttp import ClientSession, web
from minio import Minio

from inferfleet.localcluster.file_standin import ThreadedServer, Traffic
from inferfleet.localcluster.paths import cache_dir, repo_root
from inferfleet.localcluster.ports import free_port
from inferfleet.localcluster.waiting import wait_for

SECRET_KEY = "moto-secret"
_CHUNK = 64 << 10
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


def moto_server_path() -> Path:
    """The moto_server of the environment hack/setup.sh built for the pinned requirements."""
    requirements = (repo_root() / "hack" / "moto-requirements.txt").read_bytes()
    env = cache_dir() / f"moto-{hashlib.sha256(requirements).hexdigest()[:16]}"
    path = env / "bin" / "moto_server"
    if not (env / ".installed").is_file():
        raise RuntimeError(f"moto's environment {env} is missing: run `make setup`")
    return path


class MotoS3:
    """One bucket of objects in a fresh moto server; `start()` gives the pass-through's URL."""

    def __init__(
        self,
        bucket: str,
        objects: Mapping[str, bytes],
        *,
        access_key: str,
        multipart: frozenset[str] = frozenset(),
    ) -> None:
        self.bucket, self.objects, self.access_key = bucket, dict(objects), access_key
        self.multipart = multipart
        """Keys uploaded in 5 MiB parts: their ETag is not an MD5 of the object, as on AWS."""
        self.traffic = Traffic()
        self._moto: subprocess.Popen[bytes] | None = None
        self._upstream = ""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._server = ThreadedServer(app)

    def start(self) -> str:
        port = free_port()
        self._moto = subprocess.Popen(
            [str(moto_server_path()), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._upstream = f"http://127.0.0.1:{port}"
        wait_for(self._answers, timeout=30, what="moto's S3 server to listen")
        self._put_objects(f"127.0.0.1:{port}")
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()
        if self._moto is not None:
            self._moto.terminate()
            self._moto.wait(timeout=10)
            self._moto = None

    def _answers(self) -> bool:
        if self._moto is not None and self._moto.poll() is not None:
            raise RuntimeError(f"moto_server exited with {self._moto.returncode}")
        try:
            with urllib.request.urlopen(f"{self._upstream}/moto-api/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _put_objects(self, netloc: str) -> None:
        client = Minio(netloc, access_key=self.access_key, secret_key=SECRET_KEY, secure=False)
        client.make_bucket(self.bucket)
        for key, data in self.objects.items():
            part = 5 << 20 if key in self.multipart else max(len(data), 5 << 20)
            client.put_object(self.bucket, key, io.BytesIO(data), len(data), part_size=part)

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        """Forward the request as it came (its signature names this address; moto does not
        check it) and relay the answer, counting, throttling and corrupting object bytes."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        body = await request.read()
        async with (
            ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, self._upstream + request.path_qs, headers=headers, data=body or None
            ) as upstream,
        ):
            out = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_HEADERS:
                    out.headers[k] = v
            if upstream.content_length is not None:
                out.content_length = upstream.content_length
            await out.prepare(request)
            key = self._object_key(request, upstream.status)
            offset = _range_start(upstream.headers.get("Content-Range"))
            with self.traffic.streaming():
                async for chunk in upstream.content.iter_chunked(_CHUNK):
                    await self._write(out, key, offset, chunk)
                    offset += len(chunk)
            await out.write_eof()
            return out

    def _object_key(self, request: web.Request, status: int) -> str | None:
        """The object a successful GET of one object names (None for listings, errors, HEAD)."""
        parts = request.path.lstrip("/").split("/", 1)
        if request.method != "GET" or status not in (200, 206) or len(parts) < 2 or not parts[1]:
            return None
        return parts[1] if parts[0] == self.bucket else None

    async def _write(self, out: web.StreamResponse, key: str | None, offset: int, chunk: bytes) -> None:
        if key is not None and key in self.traffic.corrupt and offset < 16:
            flipped = bytes(b ^ 0xFF for b in chunk[: 16 - offset])
            chunk = flipped + chunk[16 - offset :]
        await out.write(chunk)
        if key is None:
            return
        self.traffic.served[key] += len(chunk)
        if self.traffic.bytes_per_second:
            await asyncio.sleep(len(chunk) / self.traffic.bytes_per_second)


def _range_start(content_range: str | None) -> int:
    """The first byte of a `bytes a-b/size` answer (0 for a whole object)."""
    if not content_range or not content_range.startswith("bytes "):
        return 0
    return int(content_range[len("bytes ") :].split("-", 1)[0])
