"""The served model's lifecycle: hot reload, and pinning each request to one model.

A reload loads the model directory again into a *new* :class:`ModelRuntime` off the event loop; only a
model that loads, matches its SHA-256 and passes the ONNX contract replaces the served one, by swapping
one reference. A request is pinned to the runtime that was current when it arrived, so a swap never
changes the model under a request that is being answered, and no request fails during it. A broken
replacement is refused and the old model keeps serving.

Triggers: ``POST /admin/reload`` (with ``OPENSET_ADMIN_KEY``) or ``SIGHUP`` to the server process.
Every response names the model that answered it in ``X-Model-Version`` (``name/version``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading

from starlette.concurrency import run_in_threadpool

from openset.artifacts import ArtifactError
from service.errors import ServiceError
from service.gateway import model_version
from service.runtime import ModelRuntime

log = logging.getLogger("openset.service")


def load_runtime(settings) -> ModelRuntime:
    """The configured model directory, loaded and checked (raises :class:`~openset.artifacts.ArtifactError`)."""
    return ModelRuntime(settings.model_dir, settings.onnx_threads, settings.batch_images,
                        settings.batch_wait_ms).load()


def publish(app, runtime: ModelRuntime) -> None:
    """Make ``runtime`` the served model: one reference swap, then the metrics follow."""
    previous = getattr(app.state, "runtime", None)
    app.state.runtime = runtime
    app.openapi_schema = None  # the request bodies are the served model's
    info = app.state.metrics.model_info
    if previous is not None and previous.ready:  # 0 first: with several workers its value stays in the files, now at 0
        info.labels(*_info_labels(previous)).set(0)
    info.clear()
    info.labels(*_info_labels(runtime)).set(1)


def _info_labels(runtime: ModelRuntime) -> tuple[str, str, str, str]:
    return runtime.name, runtime.version, runtime.manifest.onnx_sha256, str(runtime.manifest.threshold)


async def reload_model(app) -> ModelRuntime:
    """Load the configured model directory again; refuse (409) anything that does not load cleanly."""
    settings = app.state.settings
    async with app.state.reload_lock:  # one reload at a time; requests are never blocked by it
        old = app.state.runtime
        try:
            new = await run_in_threadpool(load_runtime, settings)
        except ArtifactError as err:
            app.state.metrics.reloads.labels("refused").inc()
            log.warning(json.dumps({"event": "model_reload_refused", "reason": str(err),
                                    "serving": model_version(old)}))
            raise ServiceError(f"replacement refused, still serving {model_version(old)}: {err}", 409) from None
        publish(app, new)
        app.state.metrics.reloads.labels("ok").inc()
        log.info(json.dumps({"event": "model_reloaded", "from": model_version(old), "to": model_version(new),
                             "sha256": new.manifest.onnx_sha256}))
        return new


def install_sighup(app) -> None:
    """``kill -HUP <pid>`` reloads the model (only where signals can be handled: the main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def done(task: asyncio.Task) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # a refused reload is already logged and counted

    def on_sighup() -> None:
        task = loop.create_task(reload_model(app))
        running.add(task)
        task.add_done_callback(done)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
