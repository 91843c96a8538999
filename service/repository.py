"""The model repository: every model directory of one folder, served side by side by name.

As in Triton's model repository and MLServer's multi-model serving, each sub-folder that holds a ``model.json``
is a model, described by its own manifest and served under the manifest's name (``/v2/models/{name}/…``; v1 takes
``?model=name``, else the default model of the settings). ``OPENSET_MODEL_DIR`` serves one directory instead.

A :class:`ModelRepository` is one snapshot of the served models: a reload (``service.lifecycle``) builds a new one
and publishes it with one reference swap, and a request keeps the snapshot it arrived with.
"""

from __future__ import annotations

from pathlib import Path

from openset.artifacts import ArtifactError
from openset.manifest import MANIFEST
from service.errors import ServiceError
from service.runtime import ModelRuntime


class ModelRepository:
    def __init__(self, models: dict[str, ModelRuntime], default: str | None) -> None:
        self.models = models
        self.default_name = default

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(runtime.ready for runtime in self.models.values())

    @property
    def default(self) -> ModelRuntime | None:
        return self.models.get(self.default_name)

    def get(self, name: str | None = None) -> ModelRuntime:
        """The model of that name (the default for None), or a 404 naming the served ones; 503 before any is
        loaded."""
        if not self.ready:
            raise ServiceError("model not loaded", 503)
        runtime = self.models.get(self.default_name if name is None else name)
        if runtime is None:
            raise ServiceError(f"unknown model {name!r}; this server serves {', '.join(map(repr, self.models))}", 404)
        return runtime


def model_directories(settings) -> list[Path]:
    """The directories to serve: ``model_dir`` alone if set, else every sub-folder of ``model_repository`` that holds
    a manifest (sorted); an :class:`~openset.artifacts.ArtifactError` if there is none."""
    if settings.model_dir is not None:
        return [Path(settings.model_dir)]
    root = Path(settings.model_repository)
    if not root.is_dir():
        raise ArtifactError(f"model repository not found: {root}")
    found = sorted(path for path in root.iterdir() if (path / MANIFEST).is_file())
    if not found:
        raise ArtifactError(f"no model in the repository {root} (a model is a folder with {MANIFEST})")
    return found


def repository_of(runtimes: list[ModelRuntime], settings) -> ModelRepository:
    """Loaded runtimes by name, with the settings' default (a single model is the default whatever its name)."""
    models: dict[str, ModelRuntime] = {}
    for runtime in runtimes:
        if runtime.name in models:
            raise ArtifactError(f"two models are named {runtime.name!r}: {models[runtime.name].model_dir} and "
                                f"{runtime.model_dir}")
        models[runtime.name] = runtime
    default = next(iter(models)) if len(models) == 1 else settings.default_model
    if default not in models:
        raise ArtifactError(f"the default model {default!r} (OPENSET_DEFAULT_MODEL) is not served; the repository "
                            f"has {', '.join(map(repr, models))}")
    return ModelRepository(models, default)
