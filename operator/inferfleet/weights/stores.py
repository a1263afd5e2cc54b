"""What `fetch` needs of a model store, and how its failures are reported."""

from __future__ import annotations

from typing import BinaryIO, Protocol

from inferfleet.weights.plan import Listing, RemoteFile


class StoreError(Exception):
    """The store refused or could not be reached; `reason` is a short CamelCase word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Store(Protocol):
    def list_files(self) -> Listing: ...

    def download(self, file: RemoteFile, out: BinaryIO, have: int) -> None:
        """Append the file's bytes from offset `have` to `out`."""

    def read_headers(self, files: list[RemoteFile]) -> dict[str, bytes]:
        """The safetensors header of each of `files` (its 8-byte length and that much JSON), by
        path, read with ranged requests; files that hold none are left out."""
