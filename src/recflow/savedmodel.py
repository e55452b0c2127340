"""SavedModels as TF Serving reads them: written so its loader finds every variable, read
the way its loader reads them.

TF Serving (and ``saved_model_cli run``, and TensorFlow's C++ and Java APIs) do not rebuild
the Python object graph as ``tf.saved_model.load`` does: ``LoadSavedModel`` imports the
MetaGraph tagged ``serve`` into a session, runs its restore op (which fills the variables
the checkpoint names) and its init op, then runs each request as ``Session::Run`` on the
signature's tensor names. A function that reads a variable the restore op does not fill
answers FAILED_PRECONDITION "Could not find variable ..." there, while
``tf.saved_model.load`` answers it correctly. Keras 3 variables are such a case when a
``tf.Module`` tracks them as Keras objects (keras-team/keras#19274, #20095;
tensorflow/serving#2250): :func:`graph_variables` is what an export tracks instead, and
:func:`load_signatures` is how the local server and the compatibility check load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf.meta_graph_pb2 import MetaGraphDef

SERVE_TAG = "serve"


def graph_variables(variables: Iterable[Any]) -> list[tf.Variable]:
    """The ``tf.Variable`` behind each of ``variables`` (Keras 3 variables or tf ones).

    A ``tf.Module`` must track these, not the Keras wrappers: the wrappers' values are saved
    in the checkpoint but under objects the MetaGraph's restore op does not map to the
    variables the serving functions read, so TF Serving's loader leaves those uninitialised.
    """
    out = []
    for v in variables:
        inner = getattr(v, "value", v)  # keras.Variable.value is its tf.Variable
        out.append(inner if hasattr(inner, "handle") else v)
    return out


@dataclasses.dataclass(frozen=True)
class FeedSpec:
    """What ``Session.run`` checks of a fed value before it runs: the tensor's dtype (the
    value is converted to it) and its static shape (``None`` where unknown)."""

    tensor: str
    dtype: Any  # numpy dtype (object for strings)
    dims: tuple[int | None, ...] | None  # None: rank unknown
    shape_text: str  # the static shape as TensorFlow prints it, for the error

    def convert(self, value: Any) -> np.ndarray:
        import numpy as np

        array = np.asarray(value, dtype=self.dtype)
        dims = self.dims
        if dims is not None and (
            array.ndim != len(dims)
            or any(d is not None and d != n for d, n in zip(dims, array.shape, strict=True))
        ):
            raise ValueError(
                f"Cannot feed value of shape {array.shape} for Tensor {self.tensor}, "
                f"which has shape {self.shape_text}"
            )
        return array


@dataclasses.dataclass
class SessionSignature:
    """One SignatureDef of a session-loaded SavedModel, callable with numpy by alias."""

    feeds: tuple[tuple[str, FeedSpec], ...]  # (alias, what is fed), in feed order
    outputs: tuple[str, ...]  # aliases, in fetch order
    run: Callable[..., Sequence[np.ndarray]]  # a session callable: feeds in, fetches out

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = [spec.convert(feeds[alias]) for alias, spec in self.feeds]
        return dict(zip(self.outputs, self.run(*values), strict=True))


@dataclasses.dataclass
class SessionModel:
    """A SavedModel loaded as TF Serving loads it; the session (and the variables in it) is
    freed with the last reference to it (in-flight requests of an unloaded version may still
    hold one)."""

    meta_graph: MetaGraphDef
    signatures: dict[str, SessionSignature]
    session: tf.compat.v1.Session


def load_signatures(
    path: Path | str,
    *,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    tags: Sequence[str] = (SERVE_TAG,),
) -> SessionModel:
    """Load ``path`` into its own graph and session (restore op, then init op) and bind each
    signature; raises what TensorFlow raises when the MetaGraph or checkpoint is unusable.

    A missing variable is not detected here (TF Serving loads such a model too); it fails on
    the first run of a signature that reads it, e.g. a warmup request. TensorFlow logs once per
    process that this loader "is deprecated ... use tf.saved_model.load": expected, and not
    advice to follow here (that loader is the one that answers what TF Serving cannot)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=intra_op_threads,
        inter_op_parallelism_threads=inter_op_threads,
    )
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(session, list(tags), str(path))
        signatures = {}
        for name, sig in meta.signature_def.items():
            if name.startswith("__"):  # __saved_model_init_op: the init op, not a signature
                continue
            in_aliases = tuple(sorted(sig.inputs))
            out_aliases = tuple(sorted(sig.outputs))
            tensors = [graph.get_tensor_by_name(sig.inputs[a].name) for a in in_aliases]
            feeds = tuple(
                (a, FeedSpec(t.name, t.dtype.as_numpy_dtype, _dims(t.shape), str(t.shape)))
                for a, t in zip(in_aliases, tensors, strict=True)
            )
            # Session.make_callable hands any feed list to Session.run, which rebuilds its
            # fetch handler per call; a callable from options goes straight to
            # Session::RunCallable: 100-220 us less per call of the 50k bench model
            # (2026-12-03). Session.run's feed conversion and shape check live on in FeedSpec.
            options = config_pb2.CallableOptions(
                feed=[sig.inputs[a].name for a in in_aliases],
                fetch=[sig.outputs[a].name for a in out_aliases],
            )
            run = session._make_callable_from_options(options)  # noqa: SLF001
            signatures[name] = SessionSignature(feeds, out_aliases, run)
    except BaseException:
        session.close()
        raise
    return SessionModel(meta, signatures, session)


def _dims(shape: tf.TensorShape) -> tuple[int | None, ...] | None:
    return None if shape.rank is None else tuple(shape.as_list())
