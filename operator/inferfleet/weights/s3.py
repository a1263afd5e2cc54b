"""S3-compatible stores (AWS, MinIO, Ceph, R2, GCS's XML API...) through the minio client."""

from __future__ import annotations

import os
import re
from typing import BinaryIO
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.credentials.providers import EnvAWSProvider, IamAwsProvider, Provider
from minio.error import MinioException, S3Error

from inferfleet.planning.model_files import MAX_HEADER_BYTES
from inferfleet.weights.plan import Listing, RemoteFile, compute_listing_revision
from inferfleet.weights.sources import ModelSource
from inferfleet.weights.stores import StoreError

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART = re.compile(r"^[0-9a-f]{32}-([1-9][0-9]*)$")
_CHUNK = 1 << 20


class S3Store:
    def __init__(self, source: ModelSource, endpoint_url: str | None, region: str) -> None:
        url = urlsplit(endpoint_url or "https://s3.amazonaws.com")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise StoreError("BadEndpoint", f"S3 endpoint {endpoint_url!r}: expected http(s)://HOST[:PORT]")
        self.endpoint = f"{url.scheme}://{url.netloc}"
        self.bucket, self.prefix = source.bucket, source.prefix
        self.client = Minio(
            url.netloc, secure=url.scheme == "https", region=region, credentials=_credentials()
        )

    def list_files(self) -> Listing:
        """Every object under the prefix, its ETag its checksum (`_remote_file`)."""
        try:
            objects = list(self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True))
        except S3Error as e:
            reason = (
                "NotFound" if e.code in ("NoSuchBucket", "NoSuchKey", "AccessDenied") else "SourceUnavailable"
            )
            raise StoreError(reason, f"s3://{self.bucket}/{self.prefix}: {e.code}: {e.message}") from e
        except (MinioException, urllib3.exceptions.HTTPError, ValueError) as e:
            raise StoreError("SourceUnavailable", f"{self.endpoint}: {e}") from e
        files = tuple(
            self._remote_file(o.object_name, o.size or 0, (o.etag or "").strip('"').lower())
            for o in objects
            if o.object_name and not o.is_dir and not o.object_name.endswith("/")
        )
        if not files:
            raise StoreError("NotFound", f"s3://{self.bucket}/{self.prefix}: no objects")
        return Listing(revision=compute_listing_revision(files), files=files)

    def _remote_file(self, name: str, size: int, etag: str) -> RemoteFile:
        """The object with its ETag as a checksum: an MD5 (one part), or a multipart ETag with
        the part size it is checked with."""
        path = name[len(self.prefix) :]
        if _MD5.match(etag):
            return RemoteFile(path=path, size=size, md5=etag)
        multipart = _MULTIPART.match(etag)
        if multipart is None:
            return RemoteFile(path=path, size=size)
        parts = int(multipart.group(1))
        return RemoteFile(path, size, multipart_etag=etag, part_size=self._part_size(name, size, parts))

    def _part_size(self, name: str, size: int, parts: int) -> int | None:
        """The size of the object's parts, from HEADs of its first and last part; None (size
        checked only) when they do not show equal parts, or the store does not say. The parts
        between are taken to be equal too: uploaders (AWS CLI, boto3, minio, rclone) use one size."""
        try:
            first = self._part_length(name, 1)
            last = first if parts == 1 else self._part_length(name, parts)
        except (S3Error, MinioException, urllib3.exceptions.HTTPError, ValueError):
            return None
        if first is None or last is None or first <= 0:
            return None
        equal = (parts - 1) * first + last == size and 0 < last <= first
        return first if equal else None

    def _part_length(self, name: str, number: int) -> int | None:
        stat = self.client.stat_object(self.bucket, name, extra_query_params={"partNumber": str(number)})
        return stat.size

    def download(self, file: RemoteFile, out: BinaryIO, have: int) -> None:
        """A ranged GET from `have` to the end."""
        if have >= file.size:
            return
        try:
            response = self.client.get_object(self.bucket, self.prefix + file.path, offset=have)
        except S3Error as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e.code}: {e.message}") from e
        except (MinioException, urllib3.exceptions.HTTPError) as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e}") from e
        try:
            for chunk in response.stream(_CHUNK):
                out.write(chunk)
        except urllib3.exceptions.HTTPError as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e}") from e
        finally:
            response.close()
            response.release_conn()

    def read_headers(self, files: list[RemoteFile]) -> dict[str, bytes]:
        """Each file's first 8 bytes (the header's length), then that many: two ranged GETs."""
        headers = {}
        for file in files:
            if file.size < 8:
                continue
            head = self._read(file, 0, 8)
            size = int.from_bytes(head, "little")
            if len(head) < 8 or size > MAX_HEADER_BYTES or 8 + size > file.size:
                raise StoreError("BadHeader", f"{file.path}: a safetensors header of {size} bytes")
            headers[file.path] = head + self._read(file, 8, size)
        return headers

    def _read(self, file: RemoteFile, offset: int, length: int) -> bytes:
        try:
            response = self.client.get_object(
                self.bucket, self.prefix + file.path, offset=offset, length=length
            )
        except S3Error as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e.code}: {e.message}") from e
        except (MinioException, urllib3.exceptions.HTTPError) as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e}") from e
        try:
            return bytes(response.read())
        except urllib3.exceptions.HTTPError as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {e}") from e
        finally:
            response.close()
            response.release_conn()


def _credentials() -> Provider | None:
    """Keys from the environment (a Job fills them from a Secret); else a pod's web identity
    (IRSA) or the instance's role; else anonymous, for public buckets."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return EnvAWSProvider()
    if os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return IamAwsProvider()
    return None
