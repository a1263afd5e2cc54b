"""Hugging Face Hub downloads through the `huggingface_hub` client (honours HF_ENDPOINT)."""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    NotASafetensorsRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)
from huggingface_hub.file_download import http_get

# Their documented home; the package exports them lazily, which mypy cannot see.
from huggingface_hub.utils import build_hf_headers, disable_progress_bars  # type: ignore[attr-defined]

from inferfleet.weights.plan import Listing, RemoteFile
from inferfleet.weights.sources import ModelSource
from inferfleet.weights.stores import StoreError


class HubStore:
    def __init__(self, source: ModelSource, token: str | None) -> None:
        disable_progress_bars()  # a Job's log gets one line per file from `fetch` instead
        self.repo_id = source.location
        self.ref = source.ref or "main"
        self.token = token
        self.api = HfApi(token=token)
        self.revision = ""

    def list_files(self) -> Listing:
        """The commit the ref points at and each file's size and checksum, in one call."""
        try:
            info = self.api.model_info(self.repo_id, revision=self.ref, files_metadata=True)
        except (RepositoryNotFoundError, GatedRepoError) as e:
            raise StoreError(
                "NotFound", f"hf://{self.repo_id}: not found or no access ({_first_line(e)})"
            ) from e
        except RevisionNotFoundError as e:
            raise StoreError("NotFound", f"hf://{self.repo_id}: no revision {self.ref!r}") from e
        except (HfHubHTTPError, httpx2.HTTPError) as e:
            raise StoreError("SourceUnavailable", f"{self.api.endpoint}: {_first_line(e)}") from e
        if not info.sha or info.siblings is None:
            raise StoreError("SourceUnavailable", f"hf://{self.repo_id}: the Hub answered without a commit")
        self.revision = info.sha
        files = tuple(
            RemoteFile(
                path=s.rfilename,
                size=s.lfs.size if s.lfs else (s.size or 0),
                sha256=s.lfs.sha256 if s.lfs else None,
                git_sha1=None if s.lfs else s.blob_id,
            )
            for s in info.siblings
        )
        return Listing(revision=info.sha, files=files)

    def download(self, file: RemoteFile, out: BinaryIO, have: int) -> None:
        """huggingface_hub's own ranged GET resumes at `have`; the URL pins the listed commit."""
        url = hf_hub_url(self.repo_id, file.path, revision=self.revision)
        try:
            http_get(
                url,
                out,
                resume_size=have,
                headers=build_hf_headers(token=self.token),
                expected_size=file.size,
            )
        except (HfHubHTTPError, httpx2.HTTPError) as e:
            raise StoreError("SourceUnavailable", f"{file.path}: {_first_line(e)}") from e

    def read_headers(self, files: list[RemoteFile]) -> dict[str, bytes]:
        """huggingface_hub's `get_safetensors_metadata` (ranged reads of each shard's first bytes
        at the listed commit), written back as the headers they are."""
        wanted = {f.path for f in files}
        try:
            found = self.api.get_safetensors_metadata(self.repo_id, revision=self.revision, token=self.token)
        except NotASafetensorsRepoError:
            return {}  # no model.safetensors nor an index: config.json alone speaks
        except SafetensorsParsingError as e:
            raise StoreError("BadHeader", f"hf://{self.repo_id}: {_first_line(e)}") from e
        except (RepositoryNotFoundError, GatedRepoError) as e:
            raise StoreError("NotFound", f"hf://{self.repo_id}: {_first_line(e)}") from e
        except (HfHubHTTPError, httpx2.HTTPError) as e:
            raise StoreError("SourceUnavailable", f"{self.api.endpoint}: {_first_line(e)}") from e
        headers = {}
        for name, meta in found.files_metadata.items():
            if name not in wanted:
                continue
            header: dict[str, object] = {"__metadata__": meta.metadata} if meta.metadata else {}
            for tensor, info in meta.tensors.items():
                header[tensor] = {
                    "dtype": info.dtype,
                    "shape": info.shape,
                    "data_offsets": list(info.data_offsets),
                }
            raw = json.dumps(header).encode()
            headers[name] = struct.pack("<Q", len(raw)) + raw
        return headers


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
