"""TF Serving's input files, judged by TF Serving's own message schemas (issue 11, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.errors import ConfigError
from recflow.serving import tfs_protos
from recflow.serving.batching import BatchingOptions
from recflow.serving.model_config import parse_text
from recflow.serving.server import build_parser, server_from_args

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BATCHING_FILES = sorted(
    [ROOT / "serving" / "batching_parameters.txt", *(ROOT / "docker" / "serving").glob("*.txt")]
)


def _fields(name: str) -> list[tuple[str, int, str, str]]:
    from google.protobuf.descriptor import FieldDescriptor as F

    types = {F.TYPE_MESSAGE: "message", F.TYPE_INT64: "int64", F.TYPE_BOOL: "bool",
             F.TYPE_STRING: "string"}  # fmt: skip
    out = []
    for f in tfs_protos.message_class(name).DESCRIPTOR.fields:
        kind = f.message_type.full_name if f.message_type else types[f.type]
        out.append((f.name, f.number, kind, "repeated" if f.is_repeated else "single"))
    return out


def test_messages_match_tf_serving_2_20_protos() -> None:
    """Field names, numbers and types as session_bundle_config.proto / monitoring_config.proto
    declare them at TF Serving's 2.20.0 tag (read from github.com/tensorflow/serving)."""
    w = "google.protobuf."
    assert _fields("BatchingParameters") == [
        ("max_batch_size", 1, w + "Int64Value", "single"),
        ("batch_timeout_micros", 2, w + "Int64Value", "single"),
        ("max_enqueued_batches", 3, w + "Int64Value", "single"),
        ("num_batch_threads", 4, w + "Int64Value", "single"),
        ("thread_pool_name", 5, w + "StringValue", "single"),
        ("allowed_batch_sizes", 6, "int64", "repeated"),
        ("pad_variable_length_inputs", 7, "bool", "single"),
        ("enable_large_batch_splitting", 8, w + "BoolValue", "single"),
        ("max_execution_batch_size", 9, w + "Int64Value", "single"),
    ]
    assert _fields("PrometheusConfig") == [
        ("enable", 1, "bool", "single"),
        ("path", 2, "string", "single"),
    ]
    assert _fields("MonitoringConfig") == [
        ("prometheus_config", 1, "tensorflow.serving.PrometheusConfig", "single")
    ]
    # Same wire encoding as TF Serving's: allowed_batch_sizes packed (proto3), field 6.
    params = tfs_protos.BatchingParameters(allowed_batch_sizes=[32, 64])
    assert params.SerializeToString() == bytes([6 << 3 | 2, 2, 32, 64])


@pytest.mark.parametrize(
    "broken, problem",
    [
        ("max_batch_size { value: 32 }\nallowed_batch_sizes { value: 32 }\n", "2:21"),
        ("pad_variable_length_inputs { value: false }\n", "1:28"),
        ("max_batch_size: 32\n", "1:17"),  # a wrapper message written as a plain value
        ("max_batch { value: 3 }\n", 'no field named "max_batch"'),
    ],
)
def test_broken_batching_forms_are_refused_naming_file_and_problem(
    tmp_path: Path, broken: str, problem: str
) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        tfs_protos.read_batching_parameters(path)
    message = str(info.value)
    assert str(path) in message and problem in message
    assert "tensorflow.serving.BatchingParameters" in message
    # The local server stops at start on the same file, as TF Serving does.
    args = build_parser().parse_args(
        ["--model_base_path", str(tmp_path), "--enable_batching",
         f"--batching_parameters_file={path}"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match=problem):
        server_from_args(args)


@pytest.mark.parametrize("path", BATCHING_FILES, ids=lambda p: p.name)
def test_shipped_batching_files_parse_with_tf_servings_schema(path: Path) -> None:
    params = tfs_protos.read_batching_parameters(path)
    assert params.HasField("max_batch_size") and params.max_batch_size.value > 0
    sizes = list(params.allowed_batch_sizes)
    if sizes:
        assert sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value
    options = BatchingOptions.from_proto(params)
    assert options.max_batch_size == params.max_batch_size.value


def test_shipped_monitoring_and_model_configs_parse() -> None:
    config = tfs_protos.read_monitoring_config(ROOT / "serving" / "monitoring.config")
    assert tfs_protos.prometheus_path(config) == "/monitoring/prometheus/metrics"
    example = ROOT / "serving" / "models.config.example"
    models = parse_text(example.read_text(encoding="utf-8"), source=str(example))
    assert [m.name for m in models.model_config_list.config] == ["recommender"]
    with pytest.raises(ConfigError, match="tensorflow.serving.MonitoringConfig"):
        tfs_protos.parse_text_proto(
            "prometheus_config { enable: yes }", tfs_protos.MonitoringConfig(),
            source="m.config", example="",
        )  # fmt: skip
    off = tfs_protos.parse_text_proto(
        "prometheus_config { enable: false }", tfs_protos.MonitoringConfig(), source="", example=""
    )
    assert tfs_protos.prometheus_path(off) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_batch_size { value: 64 } allowed_batch_sizes: 32",
         "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 32; "
         "expected 64"),
        ("max_batch_size { value: 64 } allowed_batch_sizes: 64 allowed_batch_sizes: 32 "
         "allowed_batch_sizes: 64", "must be monotonically increasing"),
        ("allowed_batch_sizes: 64", "expected 1000"),  # TF Serving's default max_batch_size
        ("max_batch_size { value: 64 } enable_large_batch_splitting { value: true } "
         "max_execution_batch_size { value: 32 } allowed_batch_sizes: 16",
         "must be equal to max_execution_batch_size; last entry was 16; expected 32"),
        ("max_batch_size { value: 64 } enable_large_batch_splitting { value: true } "
         "allowed_batch_sizes: 128", "less than or equal to max_batch_size"),
        ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1"),
    ],
)  # fmt: skip
def test_tf_servings_rules_on_batching_parameters(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="batching parameters TF Serving refuses") as info:
        tfs_protos.parse_batching_text(text, source="b.txt")
    assert message in str(info.value) and "b.txt" in str(info.value)


def test_splitting_with_matching_execution_size_is_accepted() -> None:
    params = tfs_protos.parse_batching_text(
        "max_batch_size { value: 256 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 64 } allowed_batch_sizes: 32 allowed_batch_sizes: 64"
    )
    assert BatchingOptions.from_proto(params).max_batch_size == 256


def test_batching_file_without_enable_batching_is_refused_as_tf_serving_does(
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(
        ["--model_base_path", str(tmp_path),
         f"--batching_parameters_file={ROOT / 'serving' / 'batching_parameters.txt'}"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="without setting server_options.enable_batching"):
        server_from_args(args)


def test_mirrored_protos_follow_the_pinned_serving_release() -> None:
    """A new TF Serving release means re-reading its protos: this fails until someone does."""
    from recflow.serving.release import TF_SERVING_VERSION

    assert tfs_protos.MIRRORED_RELEASE == TF_SERVING_VERSION
