"""A loopback stand-in of the Hugging Face Hub's file API: the calls `huggingface_hub` makes to
list a model at a revision (`model_info(files_metadata=True)`) and to download its files
(`resolve/<rev>/<path>`, LFS files redirected to a CDN URL as the Hub does), with ranges."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aiohttp import web

from inferfleet.localcluster.file_standin import ThreadedServer, Traffic, stream_file


class HubStandin:
    """One model repo; files of at least `lfs_min_bytes` are LFS files (sha256 published)."""

    def __init__(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        lfs_min_bytes: int = 10_000,
        token: str | None = None,
    ) -> None:
        self.repo_id, self.files, self.token = repo_id, dict(files), token
        self.lfs = {path for path, data in files.items() if len(data) >= lfs_min_bytes}
        self.commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        self.traffic = Traffic()
        self.by_sha256 = {hashlib.sha256(d).hexdigest(): p for p, d in files.items() if p in self.lfs}
        app = web.Application()
        app.router.add_get("/api/models/{org}/{name}/revision/{rev}", self._model_info)
        app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", "/cdn/{sha256}", self._cdn)
        self._server = ThreadedServer(app)

    def start(self) -> str:
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _refused(self, request: web.Request) -> web.Response | None:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(
                status=401, headers={"X-Error-Code": "RepoNotFound"}, text="Invalid credentials"
            )
        if repo != self.repo_id:
            return web.Response(
                status=404, headers={"X-Error-Code": "RepoNotFound"}, text="Repository not found"
            )
        if request.match_info["rev"] not in ("main", self.commit):
            return web.Response(
                status=404, headers={"X-Error-Code": "RevisionNotFound"}, text="Invalid rev id"
            )
        return None

    async def _model_info(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.json_response(
            {"id": self.repo_id, "sha": self.commit, "private": False, "siblings": self._siblings()}
        )

    def _siblings(self) -> list[dict[str, object]]:
        siblings: list[dict[str, object]] = []
        for path, data in sorted(self.files.items()):
            sibling: dict[str, object] = {"rfilename": path, "size": len(data), "blobId": _git_blob_id(data)}
            if path in self.lfs:
                pointer = _lfs_pointer(data)
                sibling.update(size=len(data), blobId=_git_blob_id(pointer))
                sibling["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": len(pointer),
                }
            siblings.append(sibling)
        return siblings

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        path = request.match_info["path"]
        if path not in self.files:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"}, text="Entry not found")
        data = self.files[path]
        headers = {"X-Repo-Commit": self.commit, "Accept-Ranges": "bytes"}
        if path in self.lfs:
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update(
                {"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data)), "ETag": f'"{sha256}"'}
            )
            headers["Location"] = f"{request.url.origin()}/cdn/{sha256}"
            return web.Response(status=302, headers=headers)
        headers["ETag"] = f'"{_git_blob_id(data)}"'
        return await stream_file(request, path, data, self.traffic, headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = self.by_sha256.get(request.match_info["sha256"])
        if path is None:
            return web.Response(status=404)
        return await stream_file(request, path, self.files[path], self.traffic, {"Accept-Ranges": "bytes"})


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
