"""Prometheus metrics and JSON logs: one registry per app (``service.gateway`` observes every request).

With several workers (``OPENSET_WORKERS``), prometheus_client's multiprocess mode keeps every worker's values in
files under ``PROMETHEUS_MULTIPROC_DIR`` (``openset-serve`` makes one when it is not set), and ``/metrics`` sums
them, so a scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import collections
import json
import logging
import os

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

access_log = logging.getLogger("openset.access")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's switch to multiprocess mode
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("openset_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("openset_request_duration_seconds", "Request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("openset_predictions_total",
                                   "Decisions by model and label; the share of 'other' is the drift signal",
                                   ["model", "label"], registry=self.registry)
        self.batch_size = Histogram("openset_batch_size", "Images per request by model (concurrent requests may "
                                    "share a model call: adaptive batching)", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=self.registry)
        # With several workers: 1 while any worker serves that model ("max" over the workers).
        self.model_info = Gauge("openset_model_info", "The served model (value 1)",
                                ["name", "version", "sha256", "threshold"], registry=self.registry,
                                multiprocess_mode="max")
        self._children: dict[tuple, tuple] = {}
        self._by_label: dict[tuple[str, str], object] = {}
        self._batch_sizes: dict[str, object] = {}
        self.shed = Counter("openset_requests_shed_total", "Inference requests refused with 503 by admission control, "
                            "by reason (queue_full: too many images queued; queue_delay: queued too long)",
                            ["reason"], registry=self.registry)
        self.reloads = Counter("openset_model_reloads_total", "Hot reloads by model (its directory's name when "
                               "refused) and result (ok, refused)", ["model", "result"], registry=self.registry)

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this app's registry, or every worker's values in multiprocess mode."""
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def observe_shed(self, reason: str) -> None:
        self.shed.labels(reason).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request (its route template, not its path: a bounded set of labels)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # (prometheus_client's labels() looks the child up anew on every call)
            children = self._children[key] = (self.requests.labels(route, method, str(status)),
                                              self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def observe_predictions(self, model: str, labels: list[str]) -> None:
        sizes = self._batch_sizes.get(model)
        if sizes is None:
            sizes = self._batch_sizes[model] = self.batch_size.labels(model)
        sizes.observe(len(labels))
        for label, count in collections.Counter(labels).items():
            child = self._by_label.get((model, label))
            if child is None:  # (the served models' classes and unknown labels: a bounded set)
                child = self._by_label[model, label] = self.predictions.labels(model, label)
            child.inc(count)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages that are JSON already are merged, tracebacks kept as a field."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, dict):  # log.info("access", {...fields})
            entry = dict(record.args)
        else:
            message = record.getMessage()
            try:
                entry = json.loads(message)
                entry = entry if isinstance(entry, dict) else {"message": message}
            except ValueError:
                entry = {"message": message}
        entry.setdefault("ts", record.created)
        entry["level"] = record.levelname.lower()
        entry["logger"] = record.name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the service's loggers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("openset.access", "openset.service"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
