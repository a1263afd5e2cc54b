"""Server-sent events as OpenAI streams them: `data: {json}` events split by a blank line, `[DONE]` last."""

from __future__ import annotations

from dataclasses import dataclass, field

DONE = "[DONE]"


@dataclass
class SSEFramer:
    """Cuts a byte stream into events wherever they end, however the bytes arrived.

    `chunks` counts data events other than `[DONE]` (each one a streamed chunk); `done` is set by
    `[DONE]`; `data` keeps the chunks' payloads only when `keep` is set (the load generator only counts).
    """

    keep: bool = False
    chunks: int = 0
    done: bool = False
    data: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    def feed(self, piece: bytes) -> None:
        buffer = self._buffer + piece
        if b"\r" in buffer:  # a CRLF may straddle two pieces: the buffer keeps a trailing CR
            buffer = buffer.replace(b"\r\n", b"\n")
        *events, self._buffer = buffer.split(b"\n\n")
        for event in events:
            self._event(event)

    def _event(self, event: bytes) -> None:
        lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return  # a comment (": keep-alive") or an event with no data
        payload = b"\n".join(lines).decode()
        if payload == DONE:
            self.done = True
            return
        self.chunks += 1
        if self.keep:
            self.data.append(payload)

    @property
    def pending(self) -> bytes:
        """Bytes of an event not ended yet (a stream cut mid-event leaves some)."""
        return self._buffer
