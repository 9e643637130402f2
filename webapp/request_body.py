"""Early answers behind a proxy: what is left of a request body is read (and dropped) before the answer goes out.

The site answers some requests before reading their body: 413 for a declared size over the limit, 429 from the rate
limits, 401. gunicorn then closes the connection while the reverse proxy is still sending the body, and the proxy
turns the answer into a 502 (nginx: ``writev() failed (32: Broken pipe)``). Reading the rest first lets the real
answer through. Bodies larger than the drain limit are not read: the proxy's ``client_max_body_size`` (README) must
stop those before they reach the site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

DRAIN_LIMIT = 32 * 1024 * 1024
_CHUNK = 64 * 1024


class _CountingInput:
    """``wsgi.input`` with a count of the bytes the application read."""

    def __init__(self, stream: Any):
        self.stream, self.consumed = stream, 0

    def read(self, *args: Any) -> bytes:
        data = self.stream.read(*args)
        self.consumed += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self.stream.readline(*args)
        self.consumed += len(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self.stream.readlines(*args)
        self.consumed += sum(map(len, lines))
        return lines

    def __iter__(self):
        for line in self.stream:
            self.consumed += len(line)
            yield line


class DrainUnreadBody:
    """WSGI middleware: after the application has answered, read what it left of the body (up to ``limit``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, limit: int = DRAIN_LIMIT):
        self.app, self.limit = app, limit

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        counting = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counting
        result = self.app(environ, start_response)
        self._drain(counting, environ)
        return result

    def _drain(self, counting: _CountingInput, environ: dict[str, Any]) -> None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return
        if environ.get("wsgi.input_terminated") and not length:  # chunked: the server ends the stream for us
            left = self.limit
        else:
            left = length - counting.consumed  # never past the declared length: the next request may follow
            if left > self.limit:
                return
        while left > 0:
            chunk = counting.stream.read(min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)

