"""uvicorn's httptools protocol with deadlines for slow clients: a 408, not a held connection.

uvicorn times out idle keep-alive connections, but not a client that opens a connection and then sends its
request a byte at a time (slowloris), in its head or in its body. This protocol looks at the request after each
read from the socket: a request whose line and headers are incomplete has ``header_timeout`` seconds from its
first read (or from the connection's opening) to complete them; a request whose body is incomplete has
``body_timeout`` seconds for each further read. A client that misses a deadline is answered ``408`` (unless an
answer has begun) and disconnected. A request that arrives whole in one read, as nearly all do, arms no timer.
Time the server itself takes (reading paused while the app catches up, a ``100 Continue`` not sent yet) is not
the client's: the deadline starts again.

Used by ``openset-serve`` as ``http="service.protocol:DeadlineHttpToolsProtocol"``. uvicorn has no public
mechanism for this (its ``timeout_keep_alive`` covers only idle connections), so the protocol reads uvicorn
internals: ``cycle`` (``more_body``, ``response_started``, ``response_complete``, ``waiting_for_100_continue``,
``scope``), ``flow.read_paused``, ``transport`` and ``loop``. uvicorn is pinned in ``constraints.txt``, and
``tests/test_service_protocol.py`` fails when an upgrade changes any of them.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import get_settings

ANSWERED = "openset.answered"  # the scope key of a status this protocol answered itself (the gateway logs it)


def response_408(what: str) -> bytes:
    body = b'{"error": "request %s not received in time"}' % what.encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


HEAD_408, BODY_408 = response_408("headers"), response_408("body")


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout, self.body_timeout = settings.header_timeout, settings.body_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # a request has begun and its headers are not complete

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _body_pending(self) -> bool:
        # more_body stays True when the answer came before the body's end (uvicorn then discards the rest).
        return not self._in_head and self.cycle is not None and self.cycle.more_body

    def _too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if self._body_pending():
            if self.flow.read_paused or cycle.waiting_for_100_continue:
                self._arm(self.body_timeout)  # the server is the one waiting: not the client's time
                return
            if not cycle.response_started:
                cycle.scope[ANSWERED] = 408
                self.transport.write(BODY_408)
        elif cycle is None or cycle.response_complete:  # (not inside another request's answer)
            self.transport.write(HEAD_408)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:  # from the request's first read, not re-armed by each header byte
            if self._deadline is None:
                self._arm(self.header_timeout)
        elif self._body_pending() and not self.transport.is_closing():
            self._arm(self.body_timeout)  # for each read of the body
        else:  # nothing is arriving: between requests, uvicorn's keep-alive timeout applies
            self._disarm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()  # the head's deadline (or the connection's) ends here; data_received sets the body's
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
