"""Shared parts of the loopback stand-ins of model stores (the Hugging Face Hub, S3): an aiohttp
server on its own thread, ranged and throttled file streaming with byte counters, and a small
fake model in the safetensors layout."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from aiohttp import web

_CHUNK = 64 << 10


class Traffic:
    """What a stand-in served, for tests to assert on (read from another thread: plain ints)."""

    def __init__(self) -> None:
        self.served: Counter[str] = Counter()
        """Content bytes written per file (HEAD, metadata and listings not counted)."""
        self.bytes_per_second: float | None = None
        """Throttle each file stream to this rate (None: as fast as it goes)."""
        self.corrupt: set[str] = set()
        """Files served with flipped bytes (same length) while their listed checksum stays."""
        self.open_streams = 0
        """File streams still being written: a client killed mid-file leaves its stream open
        until the stand-in's next write fails, and that write may still be counted."""

    @property
    def total(self) -> int:
        return sum(self.served.values())

    @contextmanager
    def streaming(self) -> Iterator[None]:
        self.open_streams += 1
        try:
            yield
        finally:
            self.open_streams -= 1


class ThreadedServer:
    """An aiohttp application listening on 127.0.0.1 (any free port) from a background thread."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> str:
        threading.Thread(target=self._loop.run_forever, name="store-standin", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self.url

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Close the listener and end the thread (a second call does nothing)."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
            self._loop.call_soon_threadsafe(self._loop.stop)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of `bytes=a-` / `bytes=a-b`; None for the whole file."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[len("bytes=") :].partition("-")
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return start, end


async def stream_file(
    request: web.Request, name: str, data: bytes, traffic: Traffic, headers: Mapping[str, str]
) -> web.StreamResponse:
    """The file's bytes (or the requested range), throttled and counted as they are written."""
    if name in traffic.corrupt:
        data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
    span = _parse_range(request.headers.get("Range"), len(data))
    status, start, end = (200, 0, len(data) - 1) if span is None else (206, *span)
    if start >= len(data) > 0:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
    response = web.StreamResponse(status=status, headers=dict(headers))
    response.content_length = end - start + 1
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    with traffic.streaming():
        for offset in range(start, end + 1, _CHUNK):
            chunk = data[offset : min(offset + _CHUNK, end + 1)]
            await response.write(chunk)
            traffic.served[name] += len(chunk)
            if traffic.bytes_per_second:
                await asyncio.sleep(len(chunk) / traffic.bytes_per_second)
    await response.write_eof()
    return response


def build_fake_model(shard_bytes: int = 2 << 20, seed: int = 17) -> dict[str, bytes]:
    """A two-shard model: config.json, a safetensors index and two safetensors files (one bf16
    tensor of random bytes each), laid out as on the Hub."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    weight_map = {}
    for i in (1, 2):
        shard = f"model-0000{i}-of-00002.safetensors"
        tensor = f"model.layers.{i - 1}.mlp.weight"
        cols = shard_bytes // 2 // 512
        header = json.dumps(
            {tensor: {"dtype": "BF16", "shape": [512, cols], "data_offsets": [0, 1024 * cols]}}
        )
        files[shard] = struct.pack("<Q", len(header)) + header.encode() + rng.randbytes(1024 * cols)
        weight_map[tensor] = shard
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(len(v) for v in files.values())}, "weight_map": weight_map}, indent=2
    ).encode()
    files["config.json"] = json.dumps(
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "torch_dtype": "bfloat16",
        },
        indent=2,
    ).encode()
    return files
