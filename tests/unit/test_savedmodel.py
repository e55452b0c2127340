"""SavedModels read as TF Serving reads them (recflow.savedmodel), and the local server with it.

A tf.Module that tracks a Keras 3 model's variables as Keras objects saves fine and answers
under tf.saved_model.load, but TF Serving's loader (MetaGraph + restore op into a session)
leaves those variables uninitialised: Predict answers FAILED_PRECONDITION "Could not find
variable". The local server must refuse it the same way; tracking graph_variables fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recflow.errors import ServableError
from recflow.savedmodel import graph_variables, load_signatures


def _save(out: Path, track: Callable[[list[Any]], list[Any]]) -> tuple[Path, Any]:
    import keras
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))

    class Module(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model_variables = track(list(model.variables))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": model(x)}

    module = Module()
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out, model


def _request(x: np.ndarray) -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    for size in x.shape:
        tensor.tensor_shape.dim.add(size=size)
    tensor.tensor_content = x.astype(np.float32).tobytes()
    return request


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8


def test_keras_variables_tracked_as_keras_objects_fail_as_in_tf_serving(tmp_path: Path) -> None:
    import tensorflow as tf

    from recflow.serving.server.servable import load_servable

    path, model = _save(tmp_path / "1", list)
    # The stand-in that used to judge exports answers it ...
    restored = tf.saved_model.load(str(path)).signatures["serving_default"]
    np.testing.assert_allclose(restored(x=tf.constant(X))["y"].numpy(), model(X), rtol=1e-6)
    # ... TF Serving's way of loading does not.
    loaded = load_signatures(path)
    with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
        loaded.signatures["serving_default"]({"x": X})
    servable = load_servable("m", 1, path)  # no warmup file: loads, as TF Serving does
    with pytest.raises(ServableError, match="Could not find variable") as failure:
        servable.predict(_request(X))
    assert failure.value.code == "FAILED_PRECONDITION"


def test_graph_variables_serve_the_models_answers(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2

    from recflow.serving.server.codec import tensor_proto_to_numpy
    from recflow.serving.server.servable import load_servable

    path, model = _save(tmp_path / "1", graph_variables)
    loaded = load_signatures(path, intra_op_threads=1, inter_op_threads=1)
    assert sorted(loaded.signatures) == ["serving_default"]  # not __saved_model_init_op
    out = loaded.signatures["serving_default"]({"x": X})
    np.testing.assert_allclose(out["y"], np.asarray(model(X)), rtol=1e-6)
    response = load_servable("m", 1, path).predict(_request(X))
    assert isinstance(response, predict_pb2.PredictResponse)
    np.testing.assert_allclose(
        tensor_proto_to_numpy(response.outputs["y"]), np.asarray(model(X)), rtol=1e-6
    )


def test_graph_variables_unwraps_keras_and_keeps_tf_variables() -> None:
    import keras
    import tensorflow as tf

    plain = tf.Variable(1.0)
    wrapped = keras.Variable(2.0)
    out = graph_variables([plain, wrapped])
    assert out[0] is plain
    assert isinstance(out[1], tf.Variable) and out[1] is wrapped.value


@pytest.mark.parametrize(
    ("intra", "inter", "session"),
    [
        (1, -1, (1, -1)),  # every op in the calling thread
        (0, -1, (0, 0)),  # TF Serving ignores both flags unless one is positive
        (0, 0, (0, 0)),
        (2, 0, (2, 0)),
        (0, 3, (0, 3)),
    ],
)
def test_session_threads_follow_tf_serving(
    intra: int, inter: int, session: tuple[int, int]
) -> None:
    from recflow.serving.server import session_threads

    assert session_threads(intra, inter) == session


def test_caller_thread_sessions_answer_the_same(tmp_path: Path) -> None:
    from recflow.serving.server.codec import tensor_proto_to_numpy
    from recflow.serving.server.servable import load_servable

    path, model = _save(tmp_path / "1", graph_variables)
    response = load_servable("m", 1, path, threads=(1, -1)).predict(_request(X))
    np.testing.assert_allclose(
        tensor_proto_to_numpy(response.outputs["y"]), np.asarray(model(X)), rtol=1e-6
    )


def test_signature_calls_check_feeds_as_session_run_does(tmp_path: Path) -> None:
    """Signatures run as session callables (no Session.run per call); what Session.run checks
    of a feed before running (dtype conversion, static shape) is still checked, with its
    message."""
    path, model = _save(tmp_path / "1", graph_variables)
    loaded = load_signatures(path)
    sig = loaded.meta_graph.signature_def["serving_default"]
    graph = loaded.session.graph
    feed = graph.get_tensor_by_name(sig.inputs["x"].name)
    fetch = graph.get_tensor_by_name(sig.outputs["y"].name)
    serve = loaded.signatures["serving_default"]

    as_list = serve({"x": X.astype(np.float64).tolist()})["y"]  # converted to float32
    np.testing.assert_array_equal(as_list, loaded.session.run(fetch, {feed: X}))
    np.testing.assert_allclose(as_list, np.asarray(model(X)), rtol=1e-6)
    for bad in (np.zeros((2, 5), np.float32), np.zeros(4, np.float32)):
        with pytest.raises(ValueError) as from_session_run:
            loaded.session.run(fetch, {feed: bad})
        with pytest.raises(ValueError) as from_signature:
            serve({"x": bad})
        assert str(from_signature.value) == str(from_session_run.value)
        assert "Cannot feed value of shape" in str(from_signature.value)
