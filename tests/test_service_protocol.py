"""The uvicorn internals ``service.protocol`` reads: this fails when an upgrade of uvicorn renames or drops one,
before the 408 deadlines could silently stop working (the behaviour itself: tests/test_service_hostile.py)."""

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from service.protocol import BODY_408, DeadlineHttpToolsProtocol


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 9), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def never_answers(scope, receive, send) -> None:
    await asyncio.sleep(10)


def test_the_internals_the_deadlines_read_are_there():
    async def scenario():
        config = Config(never_answers, lifespan="off", log_level="warning")
        config.load()
        protocol = DeadlineHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        assert protocol.loop is asyncio.get_running_loop() and protocol.transport is transport
        protocol.data_received(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        cycle = protocol.cycle
        assert cycle.more_body is True and cycle.response_started is False and cycle.response_complete is False
        assert cycle.waiting_for_100_continue is False and cycle.scope["path"] == "/v1/predict"
        assert protocol.flow.read_paused is False
        protocol._too_slow()  # the body's deadline, as its timer would call it
        tasks = list(protocol.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return transport, cycle

    transport, cycle = asyncio.run(scenario())
    assert transport.written == BODY_408 and transport.closed
    assert cycle.scope["openset.answered"] == 408
