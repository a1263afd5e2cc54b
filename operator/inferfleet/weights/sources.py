"""Where a model comes from (`hf://org/name@rev`, `s3://bucket/prefix`) and its name in the cache."""

from __future__ import annotations

import re
from dataclasses import dataclass

from inferfleet.planning.weights_naming import compute_cache_key

SUPPORTED = ("hf", "s3")
NOT_YET = {
    "gs": "gs:// is not supported yet; GCS serves the S3 API: use s3://BUCKET/PREFIX with --s3-endpoint-url "
    "https://storage.googleapis.com and HMAC keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "oci": "oci:// is not supported yet",
}
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class SourceError(ValueError):
    """A model URI this fetcher cannot use; `unsupported` when the scheme is known but not built."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


@dataclass(frozen=True)
class ModelSource:
    uri: str
    scheme: str
    location: str
    """hf: `org/name`; s3: `bucket/prefix`."""
    ref: str | None = None
    """The requested revision (hf only): a branch, tag or commit; None is the default branch."""

    @property
    def bucket(self) -> str:
        return self.location.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The S3 key prefix of the model's objects: a folder, so it ends with `/` (or is empty)."""
        rest = self.location.split("/", 1)[1] if "/" in self.location else ""
        return rest.strip("/") + "/" if rest.strip("/") else ""

    @property
    def ref_name(self) -> str:
        """The name under `refs/` that points at the revision fetched for this URI."""
        return self.ref or ("main" if self.scheme == "hf" else "latest")


def parse_source(uri: str) -> ModelSource:
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise SourceError(f"{uri!r} is not a model URI (hf://ORG/NAME[@REVISION] or s3://BUCKET/PREFIX)")
    if scheme in NOT_YET:
        raise SourceError(NOT_YET[scheme], unsupported=True)
    if scheme not in SUPPORTED:
        raise SourceError(f"{scheme}:// is not a model source this fetcher knows", unsupported=True)
    if scheme == "hf":
        repo, _, ref = rest.partition("@")
        if not _HF_REPO.match(repo) or "--" in repo or ".." in repo:
            raise SourceError(f"{uri!r}: expected hf://ORG/NAME[@REVISION]")
        return ModelSource(uri=uri, scheme=scheme, location=repo, ref=ref or None)
    bucket = rest.split("/", 1)[0]
    if not bucket or "@" in rest:
        raise SourceError(f"{uri!r}: expected s3://BUCKET/PREFIX (no @revision)")
    return ModelSource(uri=uri, scheme=scheme, location=rest.rstrip("/"))


def build_cache_key(source: ModelSource) -> str:
    """The model's directory name under the cache root: readable, and unique per source (the
    hash tells `s3://b/a--b` from `s3://b/a/b`); the revision is a level below."""
    return compute_cache_key(f"{source.scheme}://{source.location}")
