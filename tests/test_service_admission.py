"""Admission control: a bounded queue of images, refused at once beyond it (503 + Retry-After, counted), and the
health checks answered while the work runs in its pool."""

import asyncio
import io
import multiprocessing
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.admission import QUEUE_FULL, Admission
from service.errors import ServiceError
from service.main import create_app
from service.routes import predict
from service.settings import Settings


def test_a_full_queue_refuses_and_counts_but_an_empty_one_takes_any_request():
    shed = []
    admission = Admission(max_images=4, retry_after=3, on_shed=shed.append)
    with admission.admitted(10):  # larger than the limit, into an empty queue: admitted
        assert admission.images == 10
        with pytest.raises(ServiceError) as refused:
            admission.check()
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "3"}
    assert admission.images == 0
    with admission.admitted(3):
        admission.check()  # 3 of 4: room left
        with pytest.raises(ServiceError), admission.admitted(2):
            pass
        with admission.admitted(1):
            assert admission.images == 4
    assert admission.images == 0 and shed == [QUEUE_FULL, QUEUE_FULL]
    unlimited = Admission()
    with unlimited.admitted(10_000):
        unlimited.check()


def png() -> bytes:
    buffer = io.BytesIO()
    digit = np.full((112, 112), 255, np.uint8)
    digit[20:92, 50:62] = 0
    Image.fromarray(digit).save(buffer, "PNG")
    return buffer.getvalue()


def test_beyond_the_queue_requests_get_503_at_once_while_health_answers(shipped_model_dir, monkeypatch):
    """One picture is being laid out (held in the work pool); with room for one image, the next request is refused
    at once with Retry-After, the liveness and readiness checks answer meanwhile, /metrics counts the refusal, and
    once the work is done the server serves again."""
    started, release = threading.Event(), threading.Event()
    laid_out = predict.laid_out

    def held(*args):
        started.set()
        release.wait(10)
        return laid_out(*args)

    monkeypatch.setattr(predict, "laid_out", held)
    # (pictures in the work threads, where the test can hold them)
    settings = Settings(model_dir=shipped_model_dir, log_level="warning", max_queued_images=1, picture_processes=0)
    headers = {"content-type": "image/png"}

    async def scenario():
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                first = asyncio.ensure_future(client.post("/v1/predict", content=png(), headers=headers))
                while not started.is_set():
                    await asyncio.sleep(0.005)
                refused = await client.post("/v1/predict", content=png(), headers=headers)
                v2 = await client.post("/v2/models/mnist-0to4/infer", json={"inputs": [
                    {"name": "image", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]})
                live, ready = await client.get("/v2/health/live"), await client.get("/v2/health/ready")
                assert not first.done()  # all of that while the first request's picture is still being laid out
                release.set()
                answered = await first
                again = await client.post("/v1/predict", content=png(), headers=headers)
                metrics = (await client.get("/metrics")).text
        return refused, v2, live, ready, answered, again, metrics

    refused, v2, live, ready, answered, again, metrics = asyncio.run(scenario())
    for response in (refused, v2):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "overloaded" in response.json()["error"]
    assert live.status_code == ready.status_code == 200
    assert answered.status_code == again.status_code == 200 and answered.json()["label"] == again.json()["label"]
    assert 'openset_requests_shed_total{reason="queue_full"} 2.0' in metrics


def test_pictures_are_laid_out_in_a_process_that_ends_with_the_server(shipped_model_dir):
    """With the default settings a picture is laid out in the picture process (the same answer as in a thread),
    and that process is gone once the server has stopped."""
    async def label(processes: int) -> tuple[str, list]:
        app = create_app(Settings(model_dir=shipped_model_dir, log_level="warning", picture_processes=processes))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answer = await client.post("/v1/predict", content=png(), headers={"content-type": "image/png"})
            workers = multiprocessing.active_children()
        assert answer.status_code == 200, answer.text
        return answer.json()["scores"]["score"], workers

    in_process, workers = asyncio.run(label(1))
    in_thread, none = asyncio.run(label(0))
    assert in_process == pytest.approx(in_thread) and workers and not none
    assert not any(worker.is_alive() for worker in workers)


def test_the_pools_work_again_when_the_lifespan_runs_again(shipped_model_dir):
    """One app, its lifespan entered twice (as test clients and ASGI tools do): the second time the work pools
    are made anew, not the first time's shut ones (a 500)."""
    app = create_app(Settings(model_dir=shipped_model_dir, log_level="warning"))
    for _ in range(2):
        with TestClient(app) as client:
            answer = client.post("/v1/predict", content=png(), headers={"content-type": "image/png"})
            assert answer.status_code == 200, answer.text
            batch = client.post("/v1/predict/batch", json={"images": [[[0] * 28] * 28] * 6})
            assert batch.status_code == 200, batch.text
