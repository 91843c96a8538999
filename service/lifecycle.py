"""The served models' lifecycle: hot reload, and pinning each request to one snapshot of the repository.

A reload loads model directories again into *new* :class:`ModelRuntime` objects off the event loop; only a model
that loads, matches its SHA-256 and passes the ONNX contract replaces the served one of its directory, and the new
:class:`~service.repository.ModelRepository` is published by swapping one reference. A request is pinned to the
snapshot that was current when it arrived, so a swap never changes the model under a request that is being
answered, and no request fails during it. A broken replacement is refused and the old model keeps serving. A
reload of every model also picks up directories added to the repository and drops removed ones.

Triggers: ``POST /admin/reload`` (every model), ``POST /admin/models/{name}/reload`` (one), both with
``OPENSET_ADMIN_KEY``, or ``SIGHUP`` to the server process (every model). Every response names the model that
answered it in ``X-Model-Version`` (``name/version``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from openset.artifacts import ArtifactError
from service.admission import Admission
from service.errors import ServiceError
from service.gateway import model_version
from service.repository import ModelRepository, model_directories, repository_of
from service.runtime import ModelRuntime

log = logging.getLogger("openset.service")


def load_runtime(settings, directory: Path, admission: Admission | None = None) -> ModelRuntime:
    """One model directory, loaded and checked (raises :class:`~openset.artifacts.ArtifactError`)."""
    return ModelRuntime(directory, settings.onnx_threads, settings.batch_images, admission).load()


def load_repository(settings, admission: Admission | None = None) -> ModelRepository:
    """Every model the settings serve, loaded and checked (raises :class:`~openset.artifacts.ArtifactError`)."""
    return repository_of([load_runtime(settings, d, admission) for d in model_directories(settings)], settings)


def publish(app, repository: ModelRepository) -> None:
    """Make ``repository`` the served models: one reference swap, then the metrics follow."""
    previous = app.state.repository
    app.state.repository = repository
    app.openapi_schema = None  # the request bodies are the default model's
    info = app.state.metrics.model_info
    for runtime in previous.models.values():  # 0 first: with several workers the values stay in the files, now 0
        if runtime.ready:
            info.labels(*_info_labels(runtime)).set(0)
    info.clear()
    for runtime in repository.models.values():
        info.labels(*_info_labels(runtime)).set(1)


def _info_labels(runtime: ModelRuntime) -> tuple[str, str, str, str]:
    return runtime.name, runtime.version, runtime.manifest.onnx_sha256, str(runtime.manifest.threshold)


def _reloaded(settings, old: ModelRepository, admission: Admission, name: str | None
              ) -> tuple[list[ModelRuntime], dict[str, str]]:
    """The runtimes of a reload of ``name`` (None: every directory, rescanned), and the refused directories with
    their reasons; a refused directory keeps its old model, if it had one."""
    serving = {runtime.model_dir: runtime for runtime in old.models.values()}
    directories = [old.get(name).model_dir] if name is not None else model_directories(settings)
    fresh, refused = {}, {}
    for directory in directories:
        try:
            fresh[directory] = load_runtime(settings, directory, admission)
        except ArtifactError as err:
            refused[str(directory)] = str(err)
            if directory in serving:
                fresh[directory] = serving[directory]
    if name is not None:
        fresh = {**serving, **fresh}
    return list(fresh.values()), refused


async def reload_models(app, name: str | None = None) -> ModelRepository:
    """Load model directories again (``name``'s, or every one of the repository); a replacement that does not load
    cleanly is refused (409 once the others are published) and its old model keeps serving."""
    settings = app.state.settings
    async with app.state.reload_lock:  # one reload at a time; requests are never blocked by it
        old = app.state.repository
        try:
            runtimes, refused = await run_in_threadpool(_reloaded, settings, old, app.state.admission, name)
            new = repository_of(runtimes, settings)
        except ArtifactError as err:  # the repository itself: gone, empty, two models of one name, no default
            refused, new = {"repository": str(err)}, old
        for directory, reason in refused.items():
            app.state.metrics.reloads.labels(Path(directory).name, "refused").inc()
            log.warning(json.dumps({"event": "model_reload_refused", "model_dir": directory, "reason": reason}))
        if new is not old:
            publish(app, new)
            for runtime in new.models.values():
                if runtime not in old.models.values():
                    app.state.metrics.reloads.labels(runtime.name, "ok").inc()
                    log.info(json.dumps({"event": "model_reloaded", "model": model_version(runtime),
                                         "sha256": runtime.manifest.onnx_sha256}))
        if refused:
            still = ", ".join(model_version(r) for r in app.state.repository.models.values())
            reasons = "; ".join(refused.values())
            raise ServiceError(f"replacement refused, still serving {still}: {reasons}", 409)
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
        task = loop.create_task(reload_models(app))
        running.add(task)
        task.add_done_callback(done)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
