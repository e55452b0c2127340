"""Do our exports load and answer identically under the TF Serving release's TensorFlow?

TF Serving X.Y.Z embeds the TensorFlow X.Y runtime; our SavedModels are written by the
project's TensorFlow (requirements/constraints.txt). This check:

1. trains every model kind of ``recflow.models.zoo`` for one epoch on a small synthetic
   catalogue and exports its SavedModel with the pipeline's own code;
2. runs every signature of every SavedModel with the project's TensorFlow, and again with
   ``tensorflow-cpu==<release>`` in a throwaway virtual environment (created once, then
   reused), both through ``compat_runner.py`` (same inputs, same code), which loads each
   model as TF Serving's loader does (session, restore op, tensor names), since
   ``tf.saved_model.load`` also answers models TF Serving cannot (``recflow.savedmodel``);
3. compares the answers: string outputs must be equal, numeric ones within the tolerance of
   infra validation, and reports the largest difference seen.

``make check-serving-compat`` runs it and writes bench/results/serving_compat.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recflow.config import TrainConfig

import numpy as np

from recflow.errors import ConfigError
from recflow.jsontypes import JSONObject
from recflow.ops.machine import describe, loadavg, summary

RUNNER = Path(__file__).with_name("compat_runner.py")
ATOL, RTOL = 1e-5, 1e-4  # infra validation's comparison (recflow.infra_validation)
TOP_K = 10


@dataclasses.dataclass
class OutputDiff:
    key: str  # <kind>/<signature>/<output>
    dtype: str
    shape: list[int]
    equal: bool  # bit-for-bit (strings: same values)
    within_tolerance: bool
    max_abs_diff: float | None = None
    problem: str = ""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, tensorflow_version: str, *, python: str | None = None) -> Path:
    """A virtual environment with ``tensorflow-cpu==tensorflow_version`` (created once)."""
    exe = venv_python(venv)
    probe = [str(exe), "-c", "import tensorflow as tf; print(tf.__version__)"]
    if exe.exists():
        found = subprocess.run(probe, capture_output=True, text=True, timeout=300)
        if found.returncode == 0 and found.stdout.strip().endswith(tensorflow_version):
            return exe
    # This interpreter by default: the same Python 3.11 the project runs on, wherever it lives.
    subprocess.run([python or sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"tensorflow-cpu=={tensorflow_version}"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if install.returncode != 0:
        raise ConfigError(
            f"could not install tensorflow-cpu=={tensorflow_version} into {venv}: "
            f"{install.stderr[-2000:]}"
        )
    return exe


def quick_config(kind: str) -> TrainConfig:
    """``kind``'s settings with every epoch setting at 1: the check is about formats, not
    quality. Epoch settings are found by their flat names, so a new kind's are covered too."""
    from recflow.config import TrainConfig
    from recflow.settings import param_map, parse

    one_epoch = {name: 1 for name in param_map(TrainConfig) if name.endswith("epochs")}
    return parse(TrainConfig, {"model": kind, "embedding_dim": 8, "batch_size": 256, **one_epoch})


def export_every_kind(out: Path, kinds: list[str] | None = None) -> tuple[list[str], dict]:
    """One SavedModel per zoo kind under ``out/<kind>/``; the inputs the runner feeds."""
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic
    from recflow.features import build_features, split_leave_last_out
    from recflow.models.zoo import get_kind, kind_names

    ds = generate_synthetic(SyntheticConfig(n_users=80, n_items=50, seed=3))
    split = split_leave_last_out(ds.interactions)
    features = build_features(split.train, ds.items)
    users = [str(u) for u in features.user_ids[:6]] + ["__unknown_user__"]
    names = kinds or list(kind_names())
    for name in names:
        cfg = quick_config(name)
        kind = get_kind(name)
        train_dir = out.parent / "train" / name
        kind.fit(features, split, cfg, lambda _: None, train_dir)
        kind.export(train_dir, features, out / name, TOP_K, users[:3])
    items = [str(i) for i in features.item_ids]
    # recommend_history (sequential kinds): item ids oldest first, "" padded anywhere, one
    # history without catalogue items (popularity fallback), one empty.
    history = [items[i : i + 4] for i in range(0, 20, 4)]
    history += [["", "__not_an_item__", "", ""], ["", "", "", ""]]
    inputs = {"user_id": users, "item_id": items[: len(users)], "history": history}
    return names, inputs


def run_signatures(python: Path | str, models: Path, inputs: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    proc = subprocess.run(
        [str(python), str(RUNNER), str(models), str(inputs), str(out)],
        capture_output=True, text=True, timeout=1800, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise ConfigError(f"{python} could not run the SavedModels: {proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def compare(reference: Path, candidate: Path) -> list[OutputDiff]:
    ref, cand = np.load(reference), np.load(candidate)
    diffs = []
    for key in sorted(k for k in ref.files if k != "__meta__"):
        want = ref[key]
        diff = OutputDiff(key, str(want.dtype), list(want.shape), False, False)
        if key not in cand.files:
            diff.problem = "missing from the candidate runtime's answers"
        elif cand[key].shape != want.shape:
            diff.problem = f"shape {list(cand[key].shape)}, expected {list(want.shape)}"
        elif want.dtype.kind in "fc":
            got = cand[key]
            diff.equal = bool(np.array_equal(got, want, equal_nan=True))
            finite = np.isfinite(want) & np.isfinite(got)
            same_inf = bool(np.array_equal(np.isfinite(want), np.isfinite(got)))
            delta = np.abs(got[finite].astype(np.float64) - want[finite])
            diff.max_abs_diff = float(delta.max()) if delta.size else 0.0
            close = np.isclose(got, want, atol=ATOL, rtol=RTOL, equal_nan=True)
            diff.within_tolerance = bool(close.all()) and same_inf
        else:
            diff.equal = diff.within_tolerance = bool(np.array_equal(cand[key], want))
        if not diff.within_tolerance and not diff.problem:
            diff.problem = "values differ"
        diffs.append(diff)
    extra = sorted(set(cand.files) - set(ref.files))
    diffs += [OutputDiff(k, "", [], False, False, problem="unexpected output") for k in extra]
    return diffs


def machine() -> JSONObject:
    return {**describe(), "loadavg": loadavg()}


def check(
    serving_version: str, work: Path, venv: Path, kinds: list[str] | None = None
) -> JSONObject:
    """The whole check; a JSON-able report with ``passed``."""
    import tensorflow as tf

    from recflow.serving.release import tensorflow_runtime

    runtime = tensorflow_runtime(serving_version)
    started = time.monotonic()
    candidate_python = ensure_venv(venv, runtime)
    venv_seconds = time.monotonic() - started
    models = work / "models"
    names, inputs = export_every_kind(models, kinds)
    inputs_file = work / "inputs.json"
    inputs_file.write_text(json.dumps(inputs), encoding="utf-8")
    ref_meta = run_signatures(sys.executable, models, inputs_file, work / "reference.npz")
    cand_meta = run_signatures(candidate_python, models, inputs_file, work / "candidate.npz")
    diffs = compare(work / "reference.npz", work / "candidate.npz")
    per_kind: dict[str, JSONObject] = {}
    for name in names:
        mine = [d for d in diffs if d.key.startswith(f"{name}/")]
        per_kind[name] = {
            "signatures": ref_meta["models"].get(name, {}),
            "loaded_in_candidate": name in cand_meta["models"],
            "passed": bool(mine)
            and all(d.within_tolerance for d in mine)
            and cand_meta["models"].get(name) == ref_meta["models"].get(name),
            "bit_identical": bool(mine) and all(d.equal for d in mine),
            "outputs": [dataclasses.asdict(d) for d in mine],
        }
    return {
        "serving_version": serving_version,
        "exported_with_tensorflow": tf.__version__,
        "reference_tensorflow": ref_meta["tensorflow"],
        "candidate_tensorflow": cand_meta["tensorflow"],
        "tolerance": {"atol": ATOL, "rtol": RTOL},
        "inputs": inputs,
        "kinds": per_kind,
        "passed": all(k["passed"] for k in per_kind.values()),
        "venv_seconds": round(venv_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# TF Serving {report['serving_version']} compatibility of our exports",
        "",
        f"- command: `{report.get('command', '')}`",
        f"- date: {report.get('date', '')}",
        f"- machine: {summary(report.get('machine', {}))}, load average {report.get('machine', {}).get('loadavg')}",
        f"- exported with TensorFlow {report['exported_with_tensorflow']}; answers compared "
        f"between TensorFlow {report['reference_tensorflow']} and "
        f"tensorflow-cpu {report['candidate_tensorflow']} (the runtime of TF Serving "
        f"{report['serving_version']})",
        "- each SavedModel loaded as TF Serving loads it (the `serve` MetaGraph into a session, "
        "its restore and init ops, each signature run on its tensor names; compat_runner.py), "
        "not with tf.saved_model.load",
        f"- tolerance for numeric outputs: atol {report['tolerance']['atol']}, "
        f"rtol {report['tolerance']['rtol']} (infra validation's); strings must be equal",
        f"- result: **{'PASSED' if report['passed'] else 'FAILED'}** in "
        f"{report['total_seconds']} s (of which {report['venv_seconds']} s preparing the "
        "throwaway environment)",
        "",
        "| kind | signatures | loads | identical | within tolerance | largest score difference |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind in report["kinds"].items():
        diffs = [o["max_abs_diff"] for o in kind["outputs"] if o["max_abs_diff"] is not None]
        lines.append(
            f"| {name} | {', '.join(kind['signatures'])} | "
            f"{'yes' if kind['loaded_in_candidate'] else 'NO'} | "
            f"{'yes' if kind['bit_identical'] else 'no'} | "
            f"{'yes' if kind['passed'] else 'NO'} | {max(diffs) if diffs else 0:.3g} |"
        )
    return "\n".join(lines) + "\n"
