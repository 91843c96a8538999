"""Service settings from the environment (prefix ``OPENSET_``), read once through :func:`get_settings`.

Nothing about the model is configured here: classes, threshold, normalisation and the score
recipe all come from the model directory's ``model.json``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENSET_", extra="ignore")

    # Every model directory of the repository is served, by its manifest's name (service.repository); model_dir, if
    # set, serves that one directory instead. v1 answers with default_model unless a request names another.
    model_repository: Path = MODEL_REPOSITORY
    model_dir: Path | None = None
    default_model: str = "mnist-0to4"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_batch: int = Field(256, ge=1)
    # Images with more pixels than this are refused before decoding (decompression bombs).
    max_image_pixels: int = Field(40_000_000, ge=784)
    api_key: SecretStr | None = None
    # Enables POST /admin/reload (hot reload of model_dir); without it the admin API is not mounted.
    admin_key: SecretStr | None = None
    # Slow clients (408, service/protocol.py, as openset-serve runs): a request's head must be complete this long
    # after it began, and its body may pause no longer than body_timeout between two reads.
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    # On SIGTERM: stop accepting, let in-flight requests finish for at most this long.
    graceful_timeout: float = Field(30.0, gt=0)
    # Open connections + in-flight requests above this get 503 at once instead of queueing.
    max_connections: int = Field(1024, ge=1)
    # Comma-separated in the environment; empty = CORS closed.
    cors_origins: Annotated[list[str], NoDecode] = []
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # ONNX Runtime threads per session (0 = its default, all cores).
    onnx_threads: int = Field(1, ge=0)
    # Adaptive batching (service/batching.py): requests that arrive together go through the model in one call of
    # up to this many images (0 or 1: off, each request runs alone).
    batch_images: int = Field(64, ge=0, le=1024)
    # Admission control (service/admission.py): with more images than this queued (decoding or waiting for the
    # model), an inference request is refused at once with 503 and Retry-After (seconds); so is work queued for
    # longer than max_queue_delay_ms. 0: no limit. The work (pictures, model calls) runs in work_threads threads.
    max_queued_images: int = Field(4096, ge=0)
    max_queue_delay_ms: float = Field(500.0, ge=0)
    retry_after: int = Field(1, ge=0)
    work_threads: int = Field(2, ge=1)
    # Pictures are decoded and laid out in this many processes of their own (0: in the work threads).
    picture_processes: int = Field(1, ge=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
