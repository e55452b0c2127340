"""Server-side request batching for the local model server (TF Serving's BatchingParameters).

Concurrent Predict requests for the same model version, signature and inputs are merged along
their batch dimension (dim 0), run once, and the outputs are split back per request.

This module holds what a batch is: the options (:class:`BatchingOptions`, parsed from TF
Serving's BatchingParameters) and the merging and splitting of inputs and outputs. The
scheduler that forms batches on the server's event loop is
:class:`recflow.serving.async_batcher.AsyncBatcher`.

With ``allowed_batch_sizes``, a batch runs padded up to the smallest allowed size that holds
it, as TF Serving's batching session does (``RoundToLowestAllowedBatchSize``; the padding rows
copy the first row of the last request and their outputs are dropped): :func:`merge_inputs`
and :func:`split_outputs`. This bounds the batch shapes the model ever sees, and with them the
per-shape state TensorFlow keeps (on CPU, oneDNN keeps one primitive per MatMul shape in a
per-thread cache of up to 1,024 entries; bench/results/soak-diagnosis.md).
``pad_variable_length_inputs`` pads the other dimensions of each request's inputs to the
largest in the batch with the tensor's first element (TF Serving's ``AddPadding``); without
it, requests whose inputs differ beyond dimension 0 are not merged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The subset of TF Serving's BatchingParameters this scheduler uses."""

    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        sizes = self.allowed_batch_sizes
        if sizes and (
            any(not isinstance(n, int) or n < 1 for n in sizes)
            or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False))
            or sizes[-1] > self.max_batch_size
        ):
            raise ConfigError(
                "batching parameter allowed_batch_sizes: expected strictly increasing integers "
                f">= 1, the last at most max_batch_size ({self.max_batch_size}), found "
                f"{list(sizes)}"
            )
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"batching parameter {name}: expected an integer >= 1, found {value!r}"
                )
        if not isinstance(self.batch_timeout_micros, int) or self.batch_timeout_micros < 0:
            raise ConfigError(
                "batching parameter batch_timeout_micros: expected an integer >= 0, found "
                f"{self.batch_timeout_micros!r}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BatchingOptions:
        """From ``parse_batching_parameters`` output; fields this scheduler ignores are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in known})

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """From a checked TF Serving ``BatchingParameters`` (``recflow.serving.tfs_protos``).

        ``max_batch_size`` unset means TF Serving's default (1000), so the request limit is the
        one TF Serving applies; the other unset fields keep this scheduler's defaults.
        ``allowed_batch_sizes`` and ``pad_variable_length_inputs`` apply as in TF Serving (see
        the module docstring). Large-batch splitting is not implemented: with it, the last
        allowed size may be below ``max_batch_size``, and a request above that size runs alone
        at its own size instead of in splits.
        """
        from recflow.serving.tfs_protos import effective_max_batch_size

        values: dict[str, Any] = {"max_batch_size": effective_max_batch_size(params)}
        for name in ("batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
            if params.HasField(name):
                values[name] = int(getattr(params, name).value)
        values["allowed_batch_sizes"] = tuple(int(n) for n in params.allowed_batch_sizes)
        values["pad_variable_length_inputs"] = bool(params.pad_variable_length_inputs)
        return cls(**values)

    @property
    def max_enqueued_rows(self) -> int:
        return self.max_batch_size * self.max_enqueued_batches

    @property
    def max_execution_rows(self) -> int:
        """Rows one merged batch may gather: the largest allowed size, else max_batch_size."""
        return self.allowed_batch_sizes[-1] if self.allowed_batch_sizes else self.max_batch_size

    def padded_rows(self, rows: int) -> int:
        """TF Serving's ``RoundToLowestAllowedBatchSize``: the smallest allowed size holding
        ``rows``; ``rows`` itself without allowed sizes or above the largest one."""
        return next((n for n in self.allowed_batch_sizes if n >= rows), rows)


class ShapeMismatch(ValueError):
    """Requests merged into one batch have inputs that differ beyond dimension 0."""


def merge_inputs(
    requests: Sequence[Mapping[str, np.ndarray]], options: BatchingOptions | None = None
) -> tuple[dict[str, np.ndarray], list[int]]:
    """One input dict for a batch of requests, and the rows each request takes in it.

    Inputs are concatenated along dimension 0 (every input of a request has the same number
    of rows, the first input's). With ``options.allowed_batch_sizes`` the batch is padded to
    ``options.padded_rows``: the padding rows copy the first row of the last request that has
    one (TF Serving's ``MergeInputTensors``), and come after every request's rows, so
    :func:`split_outputs` drops them. With ``options.pad_variable_length_inputs``, each
    request's inputs are first padded along dimensions 1.. to the largest in the batch, with
    the tensor's first element (TF Serving's ``AddPadding``); without it, inputs that differ
    there raise :class:`ShapeMismatch` (TF Serving answers FAILED_PRECONDITION; the batchers
    here then run the requests one by one).
    """
    import numpy as np

    names = list(requests[0])
    sizes = [int(next(iter(r.values())).shape[0]) if r else 0 for r in requests]
    total = sum(sizes)
    padding = (options.padded_rows(total) if options is not None else total) - total
    pad_lengths = options is not None and options.pad_variable_length_inputs
    merged: dict[str, np.ndarray] = {}
    for name in names:
        parts = [np.asarray(r[name]) for r in requests]
        inner = {p.shape[1:] for p in parts}
        if len(inner) > 1:
            if not pad_lengths or len({p.ndim for p in parts}) > 1:
                raise ShapeMismatch(
                    f"Tensors with name '{name}' from different tasks have different shapes "
                    f"({sorted(inner)}) and padding is turned off. Set "
                    "pad_variable_length_inputs to true, or ensure that all tensors with the "
                    "same name have equal dimensions starting with the first dim."
                )
            widest = tuple(max(dims) for dims in zip(*inner, strict=True))
            parts = [_pad_inner(p, widest) for p in parts]
        if padding > 0:
            source = next((p for p in reversed(parts) if p.shape[0] > 0), None)
            if source is not None:
                parts.append(np.repeat(source[:1], padding, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return merged, sizes


def _pad_inner(array: np.ndarray, inner: tuple[int, ...]) -> np.ndarray:
    """``array`` grown along dimensions 1.. to ``inner``, filled with its first element."""
    import numpy as np

    if array.shape[1:] == inner:
        return array
    if array.size == 0:
        raise ShapeMismatch(
            f"cannot pad an empty tensor of shape {array.shape} to {inner}: padding copies "
            "the tensor's first element"
        )
    out = np.full((array.shape[0], *inner), array.flat[0], dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def split_outputs(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[int], rows: int
) -> list[dict[str, np.ndarray]] | None:
    """Each request's share of the outputs of a merged batch of ``rows`` rows (padding rows
    dropped); None when an output does not have ``rows`` rows (no safe split: the caller runs
    the requests alone)."""
    if any(v.ndim == 0 or v.shape[0] != rows for v in outputs.values()):
        return None
    out, start = [], 0
    for size in sizes:
        out.append({k: v[start : start + size] for k, v in outputs.items()})
        start += size
    return out
