"""Adaptive batching: concurrent requests share model calls and get exactly their own answers; a lone request
runs alone; a failing call fails every request in it, and the next call works again."""

import asyncio
import threading

import httpx
import numpy as np
import pytest

from service.admission import Admission
from service.batching import Batcher
from service.errors import ServiceError
from service.main import create_app
from service.runtime import ModelRuntime
from service.settings import Settings


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def arriving_together(app, n: int):
    """The app as a server meets it under load: every request's body is held until all ``n`` requests have
    reached the server, so that they are all in flight before the first reaches the model (however slowly the
    client gets its requests out)."""
    arrived = 0
    everyone = asyncio.Event()

    async def wrapped(scope, receive, send):
        nonlocal arrived
        arrived += 1
        if arrived == n:
            everyone.set()

        async def later():
            await everyone.wait()
            return await receive()

        await app(scope, later, send)

    return wrapped


async def served(settings: Settings, bodies: list[dict], path: str):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=arriving_together(app, len(bodies)))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(*(client.post(path, json=body) for body in bodies))
        return answers, app.state.repository.default


def test_concurrent_requests_share_calls_and_get_their_own_answers(shipped_model_dir):
    arrays = [images(1, seed)[0, 0] for seed in range(24)]
    bodies = [{"image": array.tolist()} for array in arrays]
    answers, runtime = asyncio.run(served(Settings(model_dir=shipped_model_dir, log_level="warning",
                                                   batch_images=8), bodies, "/v1/predict"))
    assert all(a.status_code == 200 for a in answers)
    assert 0 < runtime.batcher.calls < len(bodies) and runtime.batcher.images == len(bodies)
    alone = runtime.run(np.stack(arrays)[:, None])  # every image by itself, in one call
    for i, answer in enumerate(answers):
        scores = answer.json()["scores"]
        assert scores["score"] == pytest.approx(float(alone["score"][i]), abs=1e-5)
        assert scores["distance"] == pytest.approx(float(alone["distance"][i]), abs=1e-5)


def test_v2_requests_are_batched_too_and_batches_keep_their_order(shipped_model_dir):
    batches = [images(n, seed) for seed, n in enumerate([1, 3, 2, 1, 4, 1])]
    bodies = [{"inputs": [{"name": "image", "shape": list(b.shape), "datatype": "FP32", "data": b.ravel().tolist()}]}
              for b in batches]
    answers, runtime = asyncio.run(served(Settings(model_dir=shipped_model_dir, log_level="warning",
                                                   batch_images=64), bodies, "/v2/models/mnist-0to4/infer"))
    assert runtime.batcher.calls < len(bodies)
    for batch, answer in zip(batches, answers, strict=True):
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["score"]["shape"] == [len(batch)]
        np.testing.assert_allclose(outputs["score"]["data"], runtime.run(batch)["score"], atol=1e-5)


def test_a_lone_request_and_batching_off_never_use_the_batcher(shipped_model_dir):
    body = [{"image": images(1, 0)[0, 0].tolist()}]
    _, runtime = asyncio.run(served(Settings(model_dir=shipped_model_dir, log_level="warning"), body, "/v1/predict"))
    assert runtime.batcher is not None and runtime.batcher.calls == 0
    _, off = asyncio.run(served(Settings(model_dir=shipped_model_dir, log_level="warning", batch_images=0),
                                body * 4, "/v1/predict"))
    assert off.batcher is None


def test_a_lone_request_calls_the_model_itself_and_one_among_others_meets_them_in_the_batcher(shipped_model_dir):
    """The runtime reads the requests in flight (the gateway counts them) after one turn of the event loop, in
    which requests that arrived together all get that far: alone, it calls the model itself; with others, it
    goes through the batcher."""
    runtime = ModelRuntime(shipped_model_dir, batch_images=8).load()

    def answer(requests: int) -> None:
        runtime.admission.requests = requests
        assert asyncio.run(runtime.outputs(images(1, 0)))["score"].shape == (1,)

    answer(1)
    assert runtime.batcher.calls == 0
    answer(2)
    assert runtime.batcher.calls == 1


def test_a_failing_call_fails_its_requests_only():
    calls = []

    def run(batch: np.ndarray) -> dict:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return {"x": batch.sum(axis=(1, 2, 3))}

    async def scenario():
        batcher = Batcher(run, 8, Admission())
        first = await asyncio.gather(*(batcher(images(1, s)) for s in range(3)), return_exceptions=True)
        second = await asyncio.gather(*(batcher(images(2, s)) for s in range(2)))
        return first, second

    first, second = asyncio.run(scenario())
    assert all(isinstance(result, RuntimeError) for result in first)
    assert [len(out["x"]) for out in second] == [2, 2]
    np.testing.assert_allclose(second[1]["x"], images(2, 1).sum(axis=(1, 2, 3)), rtol=1e-6)


def test_images_queued_past_the_delay_are_refused_not_run():
    """While a model call runs, the requests queued behind it wait; those that waited longer than the admission's
    delay get its 503 when their turn comes, and the model never sees them."""
    started, release = threading.Event(), threading.Event()
    seen = []

    def run(batch: np.ndarray) -> dict:
        seen.append(len(batch))
        if len(seen) == 1:
            started.set()
            release.wait(5)
        return {"x": batch.sum(axis=(1, 2, 3))}

    shed = []
    admission = Admission(max_delay=0.05, on_shed=shed.append)

    async def scenario():
        batcher = Batcher(run, 8, admission)
        first = asyncio.ensure_future(batcher(images(1, 0)))
        while not started.is_set():
            await asyncio.sleep(0.001)
        late = asyncio.ensure_future(batcher(images(2, 1)))
        await asyncio.sleep(0.2)  # past the delay, still behind the first call
        release.set()
        return await asyncio.gather(first, late, return_exceptions=True)

    first, late = asyncio.run(scenario())
    assert first["x"].shape == (1,)
    assert isinstance(late, ServiceError) and late.status == 503 and late.headers["Retry-After"] == "1"
    assert seen == [1] and shed == ["queue_delay"]
