"""One HTTP/1.1 chunk written straight to a connection's transport, outside any server's writer.

Waking a handler task and going through aiohttp's writer for every streamed piece costs about
twice the CPU of this write (the sim engine's tokens, the gateway's relayed chunks). The response
must be chunked and its headers already sent (by aiohttp in the sim engine, by gateway/front_server.py in
the gateway), which also writes the last chunk; a connection holding too much unsent data refuses,
and the caller then writes through a writer that waits for the client.
"""

from __future__ import annotations

import asyncio

PUSH_BUFFER_LIMIT = 0x10000
"""Bytes a connection may hold unsent before a piece must wait for the client (aiohttp's limit)."""


def push_chunk(transport: asyncio.Transport, data: bytes) -> bool:
    """Write `data` as one chunk now, or False when the connection is closing or already full."""
    return push_framed(transport, b"%x\r\n%b\r\n" % (len(data), data))


def push_framed(transport: asyncio.Transport, framed: bytes) -> bool:
    """Write `framed` (a chunk, or a piece of an HTTP/1.0 stream, which has none) now, or False
    when the connection is closing or already full."""
    if transport.is_closing() or transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT:
        return False
    transport.write(framed)
    return True
