"""Prometheus metrics of the local model server, in TF Serving's names and layout.

TF Serving's exporter (``tensorflow_serving/util/prometheus_exporter.cc``) writes counters as
``# TYPE :tensorflow:serving:request_count counter`` with samples of that exact name (no
``_total``) and labels in their declared order. ``prometheus_client``'s writer renames counters
to ``<name>_total`` and sorts labels, so it cannot produce TF Serving's exposition; this module
writes the text format 0.0.4 itself, escaping label values as the format specifies (``\\``,
``"`` and newline; TF Serving escapes only the first two). Tests read the output with
``prometheus_client.parser`` (a test dependency).

Label values are bounded: ``model_name`` is a model of the current config, every other name a
client sends is counted under ``_other`` (a client cannot mint series or grow memory); the API
and status labels come from fixed sets.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

OTHER = "_other"  # the model_name label of every name not in the current config

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
AVAILABLE = 30

# Microsecond buckets, as TF Serving's :tensorflow:serving:request_latency histogram uses.
LATENCY_BUCKETS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                      250000, 1000000, 10000000)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def escape_label_value(value: str) -> str:
    """Prometheus text format: backslash, double quote and line feed are escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels_text(labels: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels)


def format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Histogram:
    __slots__ = ("bounds", "counts", "total", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.total += 1
        self.sum += value

    def add(self, bucket_counts: Sequence[int], total_sum: float) -> None:
        """Observations made elsewhere on the same bounds: a count per bucket, then the count
        above the last bound."""
        if len(bucket_counts) != len(self.bounds) + 1:
            raise ValueError(
                f"expected {len(self.bounds) + 1} bucket counts, found {len(bucket_counts)}"
            )
        for i, n in enumerate(bucket_counts[:-1]):
            self.counts[i] += n
        self.total += sum(bucket_counts)
        self.sum += total_sum

    def lines(self, name: str, labels: Sequence[tuple[str, str]]) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            le = labels_text([*labels, ("le", format_value(bound))])
            out.append(f"{name}_bucket{{{le}}} {cumulative}")
        out.append(f"{name}_bucket{{{labels_text([*labels, ('le', '+Inf')])}}} {self.total}")
        out.append(f"{name}_sum{{{labels_text(labels)}}} {format_value(self.sum)}")
        out.append(f"{name}_count{{{labels_text(labels)}}} {self.total}")
        return out


class ServingMetrics:
    """Request counts, latency and batch sizes; one short lock per observation (~1 us)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: frozenset[str] = frozenset()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._latency: dict[tuple[str, str], Histogram] = {}
        self._batch_sizes = Histogram(BATCH_SIZE_BUCKETS)
        self._batch_requests = 0
        self._sources: list[Callable[[ServingMetrics], None]] = []

    def set_models(self, names: Iterable[str]) -> None:
        """The model names of the current config; series of models no longer listed go."""
        with self._lock:
            self._models = frozenset(names)
            keep = self._models | {OTHER}
            self._counts = Counter({k: n for k, n in self._counts.items() if k[0] in keep})
            self._latency = {k: h for k, h in self._latency.items() if k[0] in keep}

    def observe(self, model: str, api: str, status: str, seconds: float) -> None:
        with self._lock:
            key = (model if model in self._models else OTHER, api)
            self._counts[(*key, status)] += 1
            hist = self._latency.get(key)
            if hist is None:
                hist = self._latency[key] = Histogram(LATENCY_BUCKETS_US)
            hist.observe(seconds * 1e6)

    def add_counts(self, model: str, api: str, status: str, n: int) -> None:
        """``n`` requests counted elsewhere (the native front end), as ``observe`` counts them."""
        with self._lock:
            self._counts[(model if model in self._models else OTHER, api, status)] += n

    def add_latency(
        self, model: str, api: str, bucket_counts: Sequence[int], sum_us: float
    ) -> None:
        """Latencies observed elsewhere on LATENCY_BUCKETS_US: one count per bucket, then the
        count above the last bound."""
        with self._lock:
            key = (model if model in self._models else OTHER, api)
            hist = self._latency.get(key)
            if hist is None:
                hist = self._latency[key] = Histogram(LATENCY_BUCKETS_US)
            hist.add(bucket_counts, sum_us)

    def add_batches(self, rows: int, batches: int) -> None:
        """``batches`` batches of ``rows`` one-row requests run elsewhere."""
        with self._lock:
            for _ in range(batches):
                self._batch_sizes.observe(rows)
            self._batch_requests += rows * batches

    def add_source(self, pull: Callable[[ServingMetrics], None]) -> None:
        """``pull(self)`` adds what another component counted before every read."""
        self._sources.append(pull)

    def _pull(self) -> None:
        for pull in self._sources:
            pull(self)

    def observe_batch(self, requests: int, rows: int) -> None:
        with self._lock:
            self._batch_sizes.observe(rows)
            self._batch_requests += requests

    def counts(self) -> Counter[tuple[str, str, str]]:
        self._pull()
        with self._lock:
            return Counter(self._counts)

    def series(self) -> int:
        """Labelled series held (bounded by the config's model count, APIs and status codes)."""
        with self._lock:
            return len(self._counts) + len(self._latency)

    def text(self, snapshot: Mapping[str, Mapping[int, int]]) -> str:
        """Prometheus text exposition format 0.0.4 (``snapshot``: model -> version -> state)."""
        self._pull()
        with self._lock:
            models = self._models
            counts = sorted(self._counts.items())
            latency = [(k, h.lines) for k, h in sorted(self._latency.items())]
            batch_lines = self._batch_sizes.lines(
                ":tensorflow:serving:batching_session:processed_batch_size", [("api", "Predict")]
            )
            batched = self._batch_sizes.total
        # Version states only for configured models: a reload storm of made-up names cannot
        # grow the exposition either.
        states = {m: v for m, v in snapshot.items() if m in models}
        name = ":tensorflow:serving:request_count"
        lines = [
            f"# HELP {name} Requests by model, API and status.",
            f"# TYPE {name} counter",
            *(
                f"{name}{{{labels_text([('model_name', m), ('api', a), ('status', c)])}}} {n}"
                for (m, a, c), n in counts
            ),
            "# HELP :tensorflow:serving:request_latency Request latency in microseconds.",
            "# TYPE :tensorflow:serving:request_latency histogram",
        ]
        for (model, api), hist_lines in latency:
            labels = [("model_name", model), ("API", api), ("entrypoint", "GRPC")]
            lines += hist_lines(":tensorflow:serving:request_latency", labels)
        name = ":tensorflow:serving:model_version_state"
        lines += [
            f"# HELP {name} State of each version "
            "(10 START, 20 LOADING, 30 AVAILABLE, 40 UNLOADING, 50 END).",
            f"# TYPE {name} gauge",
            *(
                f"{name}{{{labels_text([('model_name', m), ('version', str(v))])}}} {st}"
                for m, versions in sorted(states.items())
                for v, st in sorted(versions.items())
            ),
            "# HELP :recflow:serving:loaded_versions Versions AVAILABLE for inference per model.",
            "# TYPE :recflow:serving:loaded_versions gauge",
            *(
                f":recflow:serving:loaded_versions{{{labels_text([('model_name', m)])}}} "
                f"{sum(1 for st in versions.values() if st == AVAILABLE)}"
                for m, versions in sorted(states.items())
            ),
        ]
        if batched:
            name = ":tensorflow:serving:batching_session:processed_batch_size"
            lines += [
                f"# HELP {name} Rows per executed batch.",
                f"# TYPE {name} histogram",
                *batch_lines,
            ]
        return "\n".join(lines) + "\n"
