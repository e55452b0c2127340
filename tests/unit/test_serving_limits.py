"""Request bounds, gRPC channel arguments and metrics that cannot be forged (issue 13, 1-3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.errors import ConfigError
from recflow.serving.limits import (
    GRPC_DEFAULT_MAX_RECEIVE_BYTES,
    LimitExceeded,
    RequestLimits,
    check_input,
    parse_grpc_channel_arguments,
    server_options,
)
from recflow.serving.metrics import OTHER, ServingMetrics
from recflow.serving.server import DEFAULT_BIND_ADDRESS, build_parser, server_from_args

pytestmark = pytest.mark.unit

FORGED = 'evil"} 1\nfake_metric{a="b'


def test_channel_arguments_in_tf_servings_form() -> None:
    args = parse_grpc_channel_arguments(
        "grpc.max_receive_message_length=8388608, grpc.max_connection_age_ms=2000,x=abc"
    )
    assert args == [("grpc.max_receive_message_length", 8388608),
                    ("grpc.max_connection_age_ms", 2000), ("x", "abc")]  # fmt: skip
    options, receive = server_options([])
    assert receive == GRPC_DEFAULT_MAX_RECEIVE_BYTES == 4 * 1024 * 1024
    assert ("grpc.max_receive_message_length", 4 * 1024 * 1024) in options
    assert server_options(args)[1] == 8388608
    for bad in ("-1", "0", "lots"):
        with pytest.raises(ConfigError, match="must be a positive byte count"):
            server_options(parse_grpc_channel_arguments(f"grpc.max_receive_message_length={bad}"))
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_grpc_channel_arguments("grpc.max_receive_message_length")


def _tensor(dims: list[int], dtype: int = 7) -> object:
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


def _info(dims: list[int] | None) -> object:
    from tensorflow.core.protobuf import meta_graph_pb2

    info = meta_graph_pb2.TensorInfo(name="x:0", dtype=7)
    if dims is None:
        info.tensor_shape.unknown_rank = True
    for d in dims or []:
        info.tensor_shape.dim.add(size=d)
    return info


@pytest.mark.parametrize(
    "sent, expected, code, words",
    [
        ([], [-1], "INVALID_ARGUMENT", "expected shape [-1] (-1: any size), received shape []"),
        ([2, 3], [-1], "INVALID_ARGUMENT", "expected shape [-1] (-1: any size), received "
         "shape [2, 3]"),
        ([4, 5], [-1, 4], "INVALID_ARGUMENT", "expected shape [-1, 4]"),
        ([-3], [-1], "INVALID_ARGUMENT", "dimensions must be >= 0"),
        ([100_000], [-1], "INVALID_ARGUMENT",
         "Task size 100000 is larger than maximum input batch size 64"),
        ([10, 10**9], None, "RESOURCE_EXHAUSTED", "declares 10000000000 elements"),
    ],
)  # fmt: skip
def test_inputs_are_checked_before_decoding(
    sent: list[int], expected: list[int] | None, code: str, words: str
) -> None:
    with pytest.raises(LimitExceeded) as info:
        check_input("user_id", _tensor(sent), _info(expected), "serving_default", RequestLimits())
    assert info.value.code == code and words in info.value.message
    assert "'user_id'" in info.value.message


def test_rows_within_limits_pass_and_are_counted() -> None:
    limits = RequestLimits(64, "max_batch_size of b.txt")
    assert check_input("u", _tensor([64]), _info([-1]), "s", limits) == 64
    assert check_input("u", _tensor([3, 4]), _info([3, -1]), "s", limits) is None
    with pytest.raises(LimitExceeded, match="the limit is max_batch_size of b.txt"):
        check_input("u", _tensor([65]), _info([-1]), "s", limits)


def test_loopback_by_default_and_the_limit_in_force(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--model_base_path", str(tmp_path)])
    server = server_from_args(args)
    assert DEFAULT_BIND_ADDRESS == "127.0.0.1" and server.host == "127.0.0.1"
    assert (server.limits.max_rows, server.limits.rows_from) == (64, "--max_request_rows")
    assert server.limits.max_receive_bytes == 4 * 1024 * 1024
    root = Path(__file__).resolve().parents[2]
    args = build_parser().parse_args(
        ["--model_base_path", str(tmp_path), "--bind_address=0.0.0.0", "--enable_batching",
         f"--batching_parameters_file={root / 'serving' / 'batching_parameters.txt'}",
         "--grpc_channel_arguments=grpc.max_receive_message_length=1048576"]
    )  # fmt: skip
    server = server_from_args(args)
    assert server.host == "0.0.0.0"
    assert server.limits.max_rows == 64 and "batching_parameters.txt" in server.limits.rows_from
    assert server.limits.max_receive_bytes == 1048576


def _parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_metrics_cannot_be_forged_and_stay_bounded() -> None:
    metrics = ServingMetrics()
    metrics.set_models(["recommender"])
    metrics.observe("recommender", "Predict", "OK", 0.001)
    for i in range(500):  # every client-chosen name lands under one label
        metrics.observe(f"{FORGED}{i}", "Predict", "NOT_FOUND", 0.0001)
    text = metrics.text({"recommender": {1: 30}, FORGED: {1: 30}})
    families = _parse(text)
    assert "fake_metric" not in families and not any("fake" in name for name in families)
    assert set(families) == {
        ":tensorflow:serving:request_count",
        ":tensorflow:serving:request_latency",
        ":tensorflow:serving:model_version_state",
        ":recflow:serving:loaded_versions",
    }
    models = {s[1].get("model_name") for samples in families.values() for s in samples}
    assert models == {"recommender", OTHER}
    counts = {(s[1]["model_name"], s[1]["status"]): s[2]
              for s in families[":tensorflow:serving:request_count"]}  # fmt: skip
    assert counts == {("recommender", "OK"): 1.0, (OTHER, "NOT_FOUND"): 500.0}
    assert metrics.series() == 4  # 2 counters + 2 histograms, whatever the clients sent
    # TF Serving's exposition: counter name without _total, labels in declared order.
    assert ':tensorflow:serving:request_count{model_name="recommender",api="Predict",' in text


def test_configured_names_are_escaped_per_the_text_format() -> None:
    metrics = ServingMetrics()
    metrics.set_models([FORGED, "back\\slash"])
    metrics.observe(FORGED, "Predict", "OK", 0.001)
    metrics.observe("back\\slash", "Predict", "OK", 0.001)
    families = _parse(metrics.text({FORGED: {2: 30}}))
    assert "fake_metric" not in families
    names = {s[1]["model_name"] for s in families[":tensorflow:serving:request_count"]}
    assert names == {FORGED, "back\\slash"}  # the parser reads back exactly what was configured
    state = families[":tensorflow:serving:model_version_state"]
    assert state == [(":tensorflow:serving:model_version_state",
                      {"model_name": FORGED, "version": "2"}, 30.0)]  # fmt: skip
    # A model dropped from the config takes its series with it.
    metrics.set_models(["recommender"])
    assert metrics.series() == 0
