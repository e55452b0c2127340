"""Check a SavedModel against ``recflow.contract`` the way a model server will see it.

The check runs in a fresh Python process whose script imports only TensorFlow: a model that
secretly needs recflow, Keras custom objects or state of the exporting process fails here,
not in TF Serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recflow import contract
from recflow.errors import ContractError

UNKNOWN_USER_ID = "__recflow_contract_check_unknown_user__"
_RESULT_PREFIX = "RECFLOW_CONTRACT_RESULT "

# Self-contained on purpose: only tensorflow, json and sys. Argument: one JSON document.
_SCRIPT = r"""
import json, sys
args = json.loads(sys.argv[1])
problems = []
summary = {"path": args["path"]}

def problem(text):
    problems.append(text)

def finish():
    print(args["prefix"] + json.dumps({"problems": problems, "summary": summary}))
    sys.exit(0)

try:
    import tensorflow as tf
    m = tf.saved_model.load(args["path"])
except Exception as exc:
    problem(f"SavedModel: expected it to load with only tensorflow imported, found {type(exc).__name__}: {exc}")
    finish()

sig_name = args["signature"]
if sig_name not in m.signatures:
    problem(f"signatures: expected {sig_name!r}, found {sorted(m.signatures)}")
    finish()
sig = m.signatures[sig_name]

def spec_view(spec):
    return {"dtype": spec.dtype.name, "shape": [-1 if d is None else int(d) for d in spec.shape.as_list()]}

inputs = {k: spec_view(v) for k, v in sig.structured_input_signature[1].items()}
outputs = {k: spec_view(v) for k, v in sig.structured_outputs.items()}
summary["inputs"], summary["outputs"] = inputs, outputs
if sig.structured_input_signature[0]:
    problem(f"inputs: expected only named inputs, found positional {sig.structured_input_signature[0]}")
if sorted(inputs) != sorted(args["inputs"]):
    problem(f"inputs: expected exactly {sorted(args['inputs'])}, found {sorted(inputs)}")

k_found = {outputs[n]["shape"][1] for n in args["outputs"] if n in outputs and len(outputs[n]["shape"]) == 2}
k = args["top_k"]
if k is None:
    k = k_found.pop() if len(k_found) == 1 else None
    if k is None or k < 1:
        problem(f"outputs: expected one fixed K >= 1 shared by all outputs, found {sorted(k_found) or 'none'}")
summary["k"] = k

def expect(kind, found_all, name, dtype, shape):
    if name not in found_all:
        problem(f"{kind} {name!r}: expected it, found only {sorted(found_all)}")
        return
    want = [k if d == "K" else d for d in shape]
    got = found_all[name]
    if got["dtype"] != dtype:
        problem(f"{kind} {name!r}: expected dtype {dtype}, found {got['dtype']}")
    if got["shape"] != want:
        problem(f"{kind} {name!r}: expected shape {want}, found {got['shape']}")

for name, (dtype, shape) in args["inputs"].items():
    expect("input", inputs, name, dtype, shape)
for name, (dtype, shape) in args["outputs"].items():
    expect("output", outputs, name, dtype, shape)

catalogue = None
for attr in (args["score_all_attr"], args["catalogue_attr"], args["version_attr"]):
    if not hasattr(m, attr):
        problem(f"attribute {attr!r}: expected it on the loaded object, found none")
if hasattr(m, args["catalogue_attr"]):
    cat = tf.convert_to_tensor(getattr(m, args["catalogue_attr"]))
    if cat.dtype != tf.string or cat.shape.rank != 1:
        problem(f"{args['catalogue_attr']}: expected string [N], found {cat.dtype.name} {cat.shape}")
    else:
        catalogue = [c.decode() for c in cat.numpy().tolist()]
        summary["n_items"] = len(catalogue)
        if len(set(catalogue)) != len(catalogue):
            problem(f"{args['catalogue_attr']}: expected unique ids, found {len(catalogue) - len(set(catalogue))} duplicates")
        if k is not None and k > len(catalogue):
            problem(f"K: expected <= catalogue size {len(catalogue)}, found {k}")
if hasattr(m, args["version_attr"]):
    ver = tf.convert_to_tensor(getattr(m, args["version_attr"]))
    found = ver.numpy().decode() if ver.dtype == tf.string and ver.shape.rank == 0 else repr(ver)
    summary["contract_version"] = found
    if found.split(".")[0] != args["contract_version"].split(".")[0]:
        problem(f"{args['version_attr']}: expected major version of {args['contract_version']!r}, found {found!r}")
    # Outputs added by minor versions are required from the version the model claims on.
    def vt(v):
        return tuple(int(p) for p in v.split(".") if p.isdigit())
    for name, (dtype, shape, since) in args["versioned_outputs"].items():
        if vt(found) >= vt(since):
            args["outputs"][name] = [dtype, shape]
            expect("output", outputs, name, dtype, shape)

ids = list(args["sample_user_ids"]) + [args["unknown_user_id"]]
if not problems:
    try:
        out = {n: t.numpy() for n, t in sig(**{args["input_name"]: tf.constant(ids)}).items()}
        raw = getattr(m, args["score_all_attr"])(tf.constant(ids)).numpy()
    except Exception as exc:
        problem(f"call: expected {sig_name} and score_all to answer {len(ids)} ids, found {type(exc).__name__}: {exc}")
        finish()
    for name in args["outputs"]:
        if out[name].shape != (len(ids), k):
            problem(f"output {name!r} of a call with {len(ids)} ids: expected shape {(len(ids), k)}, found {out[name].shape}")
    if raw.shape != (len(ids), len(catalogue)) or raw.dtype.name != "float32":
        problem(f"score_all: expected float32 {(len(ids), len(catalogue))}, found {raw.dtype.name} {raw.shape}")
    scores = out[args["scores_name"]]
    for row, uid in enumerate(ids):
        s = scores[row]
        if (s[1:] > s[:-1]).any():
            problem(f"scores for user {uid!r}: expected descending, found {s.tolist()}")
        items = [i.decode() for i in out[args["item_ids_name"]][row].tolist()]
        unknown_items = sorted(set(items) - set(catalogue) - {""})
        if unknown_items:
            problem(f"item_ids for user {uid!r}: expected catalogue ids, found {unknown_items[:5]}")
        if len(set(i for i in items if i)) != len([i for i in items if i]):
            problem(f"item_ids for user {uid!r}: expected no repeats, found {items}")
        if args["reasons_name"] in out:
            reasons = [r.decode() for r in out[args["reasons_name"]][row].tolist()]
            blank = [j for j, (i, r) in enumerate(zip(items, reasons)) if i and not r]
            if blank:
                problem(f"reasons for user {uid!r}: expected a reason for every returned item, found none at positions {blank[:5]}")
    # Cold start excludes nothing, so its answer must be score_all's own top K.
    unknown_top = sorted(raw[-1].tolist(), reverse=True)[:k]
    diff = max(abs(a - b) for a, b in zip(unknown_top, scores[-1].tolist()))
    if diff > 1e-5:
        problem(f"unknown user: expected the top {k} of score_all (cold start), found scores differing by {diff:.3g}")
    summary["sample"] = {uid: [i.decode() for i in out[args["item_ids_name"]][r].tolist()] for r, uid in enumerate(ids)}

warm = args["path"].rstrip("/") + "/" + args["warmup_path"]
if not tf.io.gfile.exists(warm):
    problem(f"warmup: expected {args['warmup_path']}, found no such file")
else:
    try:
        records = [r.numpy() for r in tf.data.TFRecordDataset(warm)]
    except Exception as exc:
        problem(f"warmup: expected a TFRecord file, found {type(exc).__name__}: {exc}")
        records = None
    if records is not None:
        summary["warmup_records"] = len(records)
        if not 1 <= len(records) <= args["max_warmup"]:
            problem(f"warmup: expected 1..{args['max_warmup']} records, found {len(records)}")
        # Without tensorflow_serving here, check the serialized requests name the signature.
        odd = [i for i, r in enumerate(records) if sig_name.encode() not in r or args["input_name"].encode() not in r]
        if odd:
            problem(f"warmup: expected Predict requests for {sig_name!r} with input {args['input_name']!r}, found {len(odd)} records without them")
finish()
"""


def check_contract(
    path: Path,
    *,
    top_k: int | None = None,
    sample_user_ids: Sequence[str] = (),
    timeout_seconds: float = 300.0,
) -> dict[str, Any]:
    """Verify the SavedModel at ``path`` in a fresh TensorFlow-only process.

    Returns the subprocess' JSON summary (signature view, K, catalogue size, contract version,
    warmup record count, sample answers). Raises ContractError listing every violation.
    """
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ContractError(
            f"contract: expected a SavedModel (saved_model.pb) in {path}, found none; "
            "export the model first"
        )
    args = {
        "path": str(path.resolve()),
        "prefix": _RESULT_PREFIX,
        "signature": contract.SIGNATURE_NAME,
        "input_name": contract.INPUT_USER_ID,
        "scores_name": contract.OUTPUT_SCORES,
        "item_ids_name": contract.OUTPUT_ITEM_IDS,
        "inputs": contract.INPUTS,
        "outputs": contract.OUTPUTS,
        "versioned_outputs": contract.VERSIONED_OUTPUTS,
        "reasons_name": contract.OUTPUT_REASONS,
        "top_k": top_k,
        "sample_user_ids": [str(u) for u in sample_user_ids],
        "unknown_user_id": UNKNOWN_USER_ID,
        "score_all_attr": contract.SCORE_ALL_ATTR,
        "catalogue_attr": contract.CATALOGUE_ATTR,
        "version_attr": contract.CONTRACT_VERSION_ATTR,
        "contract_version": contract.CONTRACT_VERSION,
        "warmup_path": contract.WARMUP_RELATIVE_PATH,
        "max_warmup": contract.MAX_WARMUP_RECORDS,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ContractError(
            f"contract: expected the check of {path} to finish within {timeout_seconds:.0f} s, "
            "it did not; the model may be too slow to load or call"
        ) from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
    if not lines:
        raise ContractError(
            f"contract: expected a result from the checking process for {path}, found exit "
            f"code {proc.returncode}; its stderr ends with:\n{proc.stderr[-2000:]}"
        )
    result = json.loads(lines[-1][len(_RESULT_PREFIX) :])
    if result["problems"]:
        listed = "\n".join(f"- {p}" for p in result["problems"])
        raise ContractError(f"SavedModel {path} breaks the serving contract:\n{listed}")
    summary: dict[str, Any] = result["summary"]
    return summary
