"""recflow.serving.native without predictd running: its protos, its table, its metrics merge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recflow.errors import ConfigError
from recflow.serving.batching import BatchingOptions
from recflow.serving.metrics import LATENCY_BUCKETS_US, OTHER, ServingMetrics
from recflow.serving.native import NativeFrontend, native_tensors, table_lines
from recflow.serving.native import build as native_build
from recflow.serving.server.servable import Servable

pytestmark = pytest.mark.unit


def _fields(files: Any) -> dict[str, list[tuple[str, int, int, int]]]:
    def walk(prefix: str, messages: Any, out: dict[str, Any]) -> None:
        for m in messages:
            out[prefix + m.name] = [(f.name, f.number, f.type, f.label) for f in m.field]
            walk(prefix + m.name + ".", m.nested_type, out)

    out: dict[str, Any] = {}
    for f in files:
        walk(f.package + ".", f.message_type, out)
    return out


def test_the_protos_for_protoc_c_keep_every_field_and_drop_only_proto3_optional() -> None:
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import predict_pb2

    stripped = descriptor_pb2.FileDescriptorSet.FromString(native_build.descriptor_set()).file
    names = [f.name for f in stripped]
    assert names[-1] == "tensorflow_serving/apis/predict.proto"
    for i, f in enumerate(stripped):  # every import comes before the file that imports it
        assert set(f.dependency) <= set(names[:i])
    original = descriptor_pb2.FileDescriptorProto()
    predict_pb2.DESCRIPTOR.CopyToProto(original)
    assert any(fd.proto3_optional for m in original.message_type for fd in m.field)

    def optional_left(messages: Any) -> bool:
        return any(
            any(fd.proto3_optional for fd in m.field) or optional_left(m.nested_type)
            for m in messages
        )

    assert not any(optional_left(f.message_type) for f in stripped)
    # The wire format is the fields' names, numbers, types and labels: all unchanged.
    assert _fields([stripped[-1]]) == _fields([original])


def test_missing_build_tools_name_the_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_build.shutil, "which", lambda tool: None)
    with pytest.raises(ConfigError, match=r"needs gcc, protoc-c.*make native-deps"):
        native_build.predictd_binary()


def servable(version: int, *, dtype: int = 7, dims: tuple[int, ...] = (-1,),
             out_dims: tuple[int, ...] = (-1, 10), name: str = "m") -> Servable:  # fmt: skip
    from tensorflow.core.protobuf import meta_graph_pb2

    sig = meta_graph_pb2.SignatureDef()
    tensor = sig.inputs["user_id"]
    tensor.name, tensor.dtype = "serving_default_user_id:0", dtype
    for d in dims:
        tensor.tensor_shape.dim.add(size=d)
    for key, op in (
        ("item_ids", "StatefulPartitionedCall:0"),
        ("scores", "StatefulPartitionedCall:1"),
    ):
        out = sig.outputs[key]
        out.name, out.dtype = op, 1
        for d in out_dims:
            out.tensor_shape.dim.add(size=d)
    return Servable(name, version, Path(f"/models/{name}/{version}"), {}, {"serving_default": sig})


def test_only_a_user_id_per_row_is_served_natively() -> None:
    assert native_tensors(servable(1)) == (
        "user_id=serving_default_user_id:0",
        ["item_ids=StatefulPartitionedCall:0", "scores=StatefulPartitionedCall:1"],
    )
    assert native_tensors(servable(1, dtype=9)) is None  # int64 ids
    assert native_tensors(servable(1, dims=(-1, 1))) is None  # one column per row
    assert native_tensors(servable(1, out_dims=(10,))) is None  # outputs not batched
    no_signature = servable(1)
    no_signature.signature_defs = {}
    assert native_tensors(no_signature) is None


def test_the_table_lists_every_version_and_leaves_what_cannot_be_sent_to_python() -> None:
    lines = table_lines(
        [servable(2, dtype=9), servable(1), servable(1, name="bad\tname")],
        {"m": {"stable": 1, "tab\tlabel": 2}},
    )
    assert lines == [
        "servable\tm\t1\t/models/m/1\tuser_id=serving_default_user_id:0\t"
        "item_ids=StatefulPartitionedCall:0\tscores=StatefulPartitionedCall:1",
        "servable\tm\t2\t-",  # known, so "latest" is never answered by version 1
        "label\tm\tstable\t1",
    ]


def test_predictd_batches_by_the_batching_parameters() -> None:
    def argv(batching: BatchingOptions | None) -> list[str]:
        frontend = NativeFrontend("0.0.0.0:8500", "127.0.0.1:9000", max_receive_bytes=4194304,
                                  batching=batching, threads=8)  # fmt: skip
        return frontend.argv(Path("predictd"))[1:]

    bounds = ",".join(map(str, LATENCY_BUCKETS_US))
    options = BatchingOptions(max_batch_size=64, num_batch_threads=4, max_enqueued_batches=100,
                              allowed_batch_sizes=(1, 2, 4, 8, 16, 32, 64))  # fmt: skip
    assert argv(options) == ["0.0.0.0:8500", "127.0.0.1:9000", "4194304", "4", "64", "6400",
                             "1,2,4,8,16,32,64", bounds]  # fmt: skip
    # Without batching each request runs alone on one of the --grpc_max_threads threads.
    assert argv(None) == ["0.0.0.0:8500", "127.0.0.1:9000", "4194304", "8", "1", "8", "-", bounds]


def test_counts_from_elsewhere_join_the_servers_own_series() -> None:
    metrics = ServingMetrics()
    metrics.set_models(["m"])
    metrics.observe("m", "Predict", "OK", 0.0003)
    buckets = [0] * (len(LATENCY_BUCKETS_US) + 1)
    buckets[2], buckets[-1] = 3, 1  # three under 250 us, one above the last bound

    def pull(into: ServingMetrics) -> None:
        into.add_counts("m", "Predict", "OK", 4)
        into.add_counts("gone", "Predict", "OK", 1)
        into.add_latency("m", "Predict", buckets, 20_000_600.0)
        into.add_batches(4, 1)

    metrics.add_source(pull)
    text = metrics.text({"m": {1: 30}})
    assert metrics.counts()[("m", "Predict", "OK")] == 9  # pulled again: drained counts add up
    assert metrics.counts()[(OTHER, "Predict", "OK")] == 3
    assert ':tensorflow:serving:request_count{model_name="m",api="Predict",status="OK"} 5' in text
    assert (':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",'
            'entrypoint="GRPC",le="250"} 3') in text  # fmt: skip
    assert (':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",'
            'entrypoint="GRPC",le="500"} 4') in text  # fmt: skip
    assert ('request_latency_count{model_name="m",API="Predict",entrypoint="GRPC"} 5') in text
    assert 'processed_batch_size_bucket{api="Predict",le="4"} 1' in text
    with pytest.raises(ValueError, match="expected 15 bucket counts"):
        metrics.add_latency("m", "Predict", [1, 2], 1.0)
