"""uvicorn's httptools protocol with a request-head deadline (slow clients get a 408, not a held connection), and
the count of the requests the server has started (:meth:`DeadlineHttpToolsProtocol.requests_started`).

uvicorn times out idle keep-alive connections, but not a client that opens a connection and then sends
its request line and headers a byte at a time (slowloris). This protocol arms a timer when a connection
opens and when the first byte of each request arrives, and disarms it once the headers are complete; a
client still inside its headers at the deadline is answered ``408`` and disconnected. Slow *bodies* are
bounded by :class:`service.gateway.Gateway`.

The count is uvicorn's own set of request tasks, which holds a request as soon as its head is read, before its
task first runs: the model runtime reads it to tell a lone request, which it answers at once, from one among
others, which it lets meet them in a shared model call (``service.runtime``). Used by ``openset-serve`` as
``http="service.protocol:DeadlineHttpToolsProtocol"``.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import get_settings

_BODY = b'{"error": "request headers not received in time"}'
RESPONSE_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    server_tasks: set[asyncio.Task] | None = None  # the running server's request tasks, one set for its connections

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = get_settings().header_timeout
        self._deadline: asyncio.TimerHandle | None = None
        DeadlineHttpToolsProtocol.server_tasks = self.tasks

    @classmethod
    def requests_started(cls) -> int | None:
        """The requests this process's server has read the head of and not finished answering (every route);
        None where no server runs with this protocol (an in-process test client, another server)."""
        return None if cls.server_tasks is None else len(cls.server_tasks)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(RESPONSE_408)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Between requests uvicorn's own keep-alive timeout applies; ours starts with the next request's bytes.
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
