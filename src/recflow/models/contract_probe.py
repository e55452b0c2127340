"""The probe :func:`recflow.models.contract_check.check_contract` runs in a fresh process.

Run by path, ``python -P contract_probe.py '<ProbeArgs as JSON>'``, it imports only ``json``,
``sys`` and TensorFlow, never recflow (nor Keras custom objects): a SavedModel that secretly
needs the exporting process fails here, not in TF Serving. It loads the model, compares its
signature with the contract (names, dtypes, shapes, K), calls it with the sample users and an
unknown one, checks the answers, loads it again as TF Serving does (a session; the same
answers), checks the warmup file, and prints one line,
``<prefix>{"problems": [...], "summary": {...}}``, then exits 0 (problems are data, not a
crash; the parent raises ``ContractError`` from them).

Keep this module free of recflow imports: ``tests/unit/test_export.py`` runs it and checks
that no recflow module was loaded.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

if TYPE_CHECKING:
    import numpy as np
    import tensorflow as tf

# (dtype, shape) of a tensor as recflow.contract declares it (lists once through JSON); a shape
# holds -1 for "any" and "K" for the model's top K.
Shape = tuple[int | str, ...]
TensorSpecView = tuple[str, Shape]


class ProbeArgs(TypedDict):
    """The one argument: what the contract asks (from ``recflow.contract``) and what to call."""

    path: str
    prefix: str
    signature: str
    input_name: str
    scores_name: str
    item_ids_name: str
    inputs: dict[str, TensorSpecView]
    outputs: dict[str, TensorSpecView]
    versioned_outputs: dict[str, tuple[str, Shape, str]]
    reasons_name: str
    top_k: int | None
    sample_user_ids: list[str]
    unknown_user_id: str
    score_all_attr: str
    catalogue_attr: str
    version_attr: str
    contract_version: str
    warmup_path: str
    max_warmup: int


class Probe:
    """The problems found so far and the summary reported with them."""

    def __init__(self, args: ProbeArgs) -> None:
        self.args = args
        self.problems: list[str] = []
        self.summary: dict[str, Any] = {"path": args["path"]}

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def finish(self) -> NoReturn:
        result = {"problems": self.problems, "summary": self.summary}
        print(self.args["prefix"] + json.dumps(result))
        sys.exit(0)

    def expect(
        self,
        kind: str,
        found_all: dict[str, dict[str, Any]],
        name: str,
        spec: TensorSpecView,
        k: int | None,
    ) -> None:
        """``found_all[name]`` has the dtype and shape of ``spec`` ("K" read as ``k``)."""
        dtype, shape = spec
        if name not in found_all:
            self.problem(f"{kind} {name!r}: expected it, found only {sorted(found_all)}")
            return
        want = [k if d == "K" else d for d in shape]
        got = found_all[name]
        if got["dtype"] != dtype:
            self.problem(f"{kind} {name!r}: expected dtype {dtype}, found {got['dtype']}")
        if got["shape"] != want:
            self.problem(f"{kind} {name!r}: expected shape {want}, found {got['shape']}")


def _spec_view(spec: tf.TensorSpec) -> dict[str, Any]:
    return {
        "dtype": spec.dtype.name,
        "shape": [-1 if d is None else int(d) for d in spec.shape.as_list()],
    }


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def check_signature(
    probe: Probe, sig: tf.types.experimental.ConcreteFunction
) -> tuple[dict[str, dict[str, Any]], int | None]:
    """(the signature's outputs as views, K): names, dtypes and shapes against the contract."""
    args = probe.args
    inputs = {k: _spec_view(v) for k, v in sig.structured_input_signature[1].items()}
    outputs = {k: _spec_view(v) for k, v in sig.structured_outputs.items()}
    probe.summary["inputs"], probe.summary["outputs"] = inputs, outputs
    if sig.structured_input_signature[0]:
        probe.problem(
            "inputs: expected only named inputs, found positional "
            f"{sig.structured_input_signature[0]}"
        )
    if sorted(inputs) != sorted(args["inputs"]):
        probe.problem(f"inputs: expected exactly {sorted(args['inputs'])}, found {sorted(inputs)}")

    k_found = {
        outputs[n]["shape"][1]
        for n in args["outputs"]
        if n in outputs and len(outputs[n]["shape"]) == 2
    }
    k = args["top_k"]
    if k is None:
        k = k_found.pop() if len(k_found) == 1 else None
        if k is None or k < 1:
            probe.problem(
                "outputs: expected one fixed K >= 1 shared by all outputs, found "
                f"{sorted(k_found) or 'none'}"
            )
    probe.summary["k"] = k
    for name, spec in args["inputs"].items():
        probe.expect("input", inputs, name, spec, k)
    for name, spec in args["outputs"].items():
        probe.expect("output", outputs, name, spec, k)
    return outputs, k


def check_attributes(
    probe: Probe, m: Any, outputs: dict[str, dict[str, Any]], k: int | None
) -> list[str] | None:
    """The catalogue (returned, None if unreadable), the contract version and the outputs that
    version requires; ``m`` is the loaded SavedModel (a restored trackable object)."""
    import tensorflow as tf

    args = probe.args
    catalogue = None
    for attr in (args["score_all_attr"], args["catalogue_attr"], args["version_attr"]):
        if not hasattr(m, attr):
            probe.problem(f"attribute {attr!r}: expected it on the loaded object, found none")
    if hasattr(m, args["catalogue_attr"]):
        cat = tf.convert_to_tensor(getattr(m, args["catalogue_attr"]))
        if cat.dtype != tf.string or cat.shape.rank != 1:
            probe.problem(
                f"{args['catalogue_attr']}: expected string [N], found {cat.dtype.name} {cat.shape}"
            )
        else:
            catalogue = [c.decode() for c in cat.numpy().tolist()]
            probe.summary["n_items"] = len(catalogue)
            if len(set(catalogue)) != len(catalogue):
                probe.problem(
                    f"{args['catalogue_attr']}: expected unique ids, found "
                    f"{len(catalogue) - len(set(catalogue))} duplicates"
                )
            if k is not None and k > len(catalogue):
                probe.problem(f"K: expected <= catalogue size {len(catalogue)}, found {k}")
    if hasattr(m, args["version_attr"]):
        ver = tf.convert_to_tensor(getattr(m, args["version_attr"]))
        found = (
            ver.numpy().decode() if ver.dtype == tf.string and ver.shape.rank == 0 else repr(ver)
        )
        probe.summary["contract_version"] = found
        if found.split(".")[0] != args["contract_version"].split(".")[0]:
            probe.problem(
                f"{args['version_attr']}: expected major version of "
                f"{args['contract_version']!r}, found {found!r}"
            )
        # Outputs added by minor versions are required from the version the model claims on.
        for name, (dtype, shape, since) in args["versioned_outputs"].items():
            if _version_tuple(found) >= _version_tuple(since):
                args["outputs"][name] = (dtype, shape)
                probe.expect("output", outputs, name, (dtype, shape), k)
    return catalogue


def check_answers(
    probe: Probe,
    m: Any,
    sig: tf.types.experimental.ConcreteFunction,
    k: int | None,
    catalogue: list[str] | None,
) -> dict[str, np.ndarray]:
    """Call the signature and ``score_all`` with the sample users plus an unknown one; returns
    the signature's outputs."""
    import tensorflow as tf

    args = probe.args
    ids = list(args["sample_user_ids"]) + [args["unknown_user_id"]]
    try:
        out = {n: t.numpy() for n, t in sig(**{args["input_name"]: tf.constant(ids)}).items()}
        raw = getattr(m, args["score_all_attr"])(tf.constant(ids)).numpy()
    except Exception as exc:
        probe.problem(
            f"call: expected {args['signature']} and score_all to answer {len(ids)} ids, found "
            f"{type(exc).__name__}: {exc}"
        )
        probe.finish()
    for name in args["outputs"]:
        if out[name].shape != (len(ids), k):
            probe.problem(
                f"output {name!r} of a call with {len(ids)} ids: expected shape "
                f"{(len(ids), k)}, found {out[name].shape}"
            )
    # Reached only without earlier problems: the catalogue was read and K is fixed.
    assert catalogue is not None and k is not None
    if raw.shape != (len(ids), len(catalogue)) or raw.dtype.name != "float32":
        probe.problem(
            f"score_all: expected float32 {(len(ids), len(catalogue))}, found "
            f"{raw.dtype.name} {raw.shape}"
        )
    scores = out[args["scores_name"]]
    for row, uid in enumerate(ids):
        _check_row(probe, out, scores[row], row, uid, catalogue)
    # Cold start excludes nothing, so its answer must be score_all's own top K.
    unknown_top = sorted(raw[-1].tolist(), reverse=True)[:k]
    diff = max(abs(a - b) for a, b in zip(unknown_top, scores[-1].tolist(), strict=False))
    if diff > 1e-5:
        probe.problem(
            f"unknown user: expected the top {k} of score_all (cold start), found scores "
            f"differing by {diff:.3g}"
        )
    probe.summary["sample"] = {
        uid: [i.decode() for i in out[args["item_ids_name"]][r].tolist()]
        for r, uid in enumerate(ids)
    }
    return out


def _check_row(
    probe: Probe,
    out: dict[str, np.ndarray],
    s: np.ndarray,
    row: int,
    uid: str,
    catalogue: list[str],
) -> None:
    """One user's answer: descending scores, catalogue ids without repeats, a reason each."""
    args = probe.args
    if (s[1:] > s[:-1]).any():
        probe.problem(f"scores for user {uid!r}: expected descending, found {s.tolist()}")
    items = [i.decode() for i in out[args["item_ids_name"]][row].tolist()]
    unknown_items = sorted(set(items) - set(catalogue) - {""})
    if unknown_items:
        probe.problem(
            f"item_ids for user {uid!r}: expected catalogue ids, found {unknown_items[:5]}"
        )
    if len(set(i for i in items if i)) != len([i for i in items if i]):
        probe.problem(f"item_ids for user {uid!r}: expected no repeats, found {items}")
    if args["reasons_name"] in out:
        reasons = [r.decode() for r in out[args["reasons_name"]][row].tolist()]
        blank = [j for j, (i, r) in enumerate(zip(items, reasons, strict=False)) if i and not r]
        if blank:
            probe.problem(
                f"reasons for user {uid!r}: expected a reason for every returned item, found "
                f"none at positions {blank[:5]}"
            )


def check_warmup(probe: Probe) -> None:
    """TF Serving's warmup file: 1..max TFRecords, each a Predict request of the signature."""
    import tensorflow as tf

    args = probe.args
    warm = args["path"].rstrip("/") + "/" + args["warmup_path"]
    if not tf.io.gfile.exists(warm):
        probe.problem(f"warmup: expected {args['warmup_path']}, found no such file")
        return
    try:
        records = [r.numpy() for r in tf.data.TFRecordDataset(warm)]
    except Exception as exc:
        probe.problem(f"warmup: expected a TFRecord file, found {type(exc).__name__}: {exc}")
        return
    probe.summary["warmup_records"] = len(records)
    if not 1 <= len(records) <= args["max_warmup"]:
        probe.problem(f"warmup: expected 1..{args['max_warmup']} records, found {len(records)}")
    # Without tensorflow_serving here, check the serialized requests name the signature.
    sig_name, input_name = args["signature"], args["input_name"]
    odd = [
        i
        for i, r in enumerate(records)
        if sig_name.encode() not in r or input_name.encode() not in r
    ]
    if odd:
        probe.problem(
            f"warmup: expected Predict requests for {sig_name!r} with input {input_name!r}, "
            f"found {len(odd)} records without them"
        )


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc`` that says something (TensorFlow's start "Graph execution
    error:" and give the cause on the next line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if not line.endswith(":")), lines[0] if lines else "")


def check_serving_load(probe: Probe, expected: dict[str, Any]) -> None:
    """The signature loaded as TF Serving loads it (the ``serve`` MetaGraph into a session,
    restore and init ops, tensors by name; as ``recflow.savedmodel``, which this script may
    not import) must answer the sample ids as the restored object did (``expected``).
    ``tf.saved_model.load`` also answers models whose variables TF Serving cannot find."""
    import numpy as np
    import tensorflow as tf

    args = probe.args
    ids = list(args["sample_user_ids"]) + [args["unknown_user_id"]]
    graph = tf.Graph()
    try:
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], args["path"])
            sig = meta.signature_def[args["signature"]]
            fetch = {name: info.name for name, info in sig.outputs.items()}
            feed = {sig.inputs[args["input_name"]].name: np.array(ids, dtype=object)}
            got = session.run(fetch, feed)
    except Exception as exc:
        probe.problem(
            f"TF Serving's loader: expected {args['signature']} to answer {len(ids)} ids when "
            "loaded as TF Serving loads it (session, restore op), found "
            f"{type(exc).__name__}: {_first_line(exc)}; a tf.Module must track the "
            "tf.Variables behind Keras variables (recflow.savedmodel.graph_variables)"
        )
        return
    for name, value in expected.items():
        same = (
            np.array_equal(got[name], value)
            if value.dtype == object
            else np.allclose(got[name], value, rtol=1e-4, atol=1e-5)
        )
        if not same:
            probe.problem(
                f"TF Serving's loader: output {name!r} differs from tf.saved_model.load's answer"
            )


def main(argv: list[str]) -> NoReturn:
    probe = Probe(json.loads(argv[1]))
    args = probe.args
    try:
        import tensorflow as tf

        m = tf.saved_model.load(args["path"])
    except Exception as exc:
        probe.problem(
            "SavedModel: expected it to load with only tensorflow imported, found "
            f"{type(exc).__name__}: {exc}"
        )
        probe.finish()

    sig_name = args["signature"]
    if sig_name not in m.signatures:
        probe.problem(f"signatures: expected {sig_name!r}, found {sorted(m.signatures)}")
        probe.finish()
    sig = m.signatures[sig_name]
    outputs, k = check_signature(probe, sig)
    catalogue = check_attributes(probe, m, outputs, k)
    if not probe.problems:
        answers = check_answers(probe, m, sig, k, catalogue)
        check_serving_load(probe, answers)
    check_warmup(probe)
    probe.finish()


if __name__ == "__main__":
    main(sys.argv)
