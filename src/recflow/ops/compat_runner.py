"""Run every signature of some SavedModels and save the answers (one TensorFlow, any release).

Executed by path, not imported, by ``recflow.ops.serving_compat``: once with the project's
TensorFlow and once with ``tensorflow-cpu==<TF Serving release>`` in a throwaway virtual
environment. It therefore imports nothing but the standard library, numpy and tensorflow.

    python compat_runner.py MODELS_DIR INPUTS_JSON OUT_NPZ

MODELS_DIR holds one SavedModel per sub-folder (``<kind>/``). INPUTS_JSON maps input names to
lists of values (e.g. ``{"user_id": ["u1", "u2"]}``); an input it does not name is an error.
OUT_NPZ receives ``<kind>/<signature>/<output>`` arrays (strings decoded to str) and a
``__meta__`` JSON string with the TensorFlow version and each model's signatures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _as_numpy(value, np):  # type: ignore[no-untyped-def]
    array = value.numpy()
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[str])(array)
    return array


def run(models_dir: Path, inputs: dict, out: Path) -> dict:  # type: ignore[type-arg]
    import numpy as np
    import tensorflow as tf

    arrays: dict[str, object] = {}
    meta: dict[str, object] = {"tensorflow": tf.__version__, "models": {}}
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        loaded = tf.saved_model.load(str(model_dir))
        signatures = {}
        for sig_name in sorted(loaded.signatures.keys()):
            fn = loaded.signatures[sig_name]
            specs = fn.structured_input_signature[1]
            feed = {}
            for name, spec in specs.items():
                if name not in inputs:
                    raise SystemExit(f"{model_dir.name}/{sig_name}: no values for input {name!r}")
                feed[name] = tf.constant(inputs[name], dtype=spec.dtype)
            result = fn(**feed)
            signatures[sig_name] = sorted(result)
            for key, value in result.items():
                arrays[f"{model_dir.name}/{sig_name}/{key}"] = _as_numpy(value, np)
        meta["models"][model_dir.name] = signatures  # type: ignore[index]
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return meta


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    models_dir, inputs_json, out = (Path(a) for a in argv)
    meta = run(models_dir, json.loads(inputs_json.read_text(encoding="utf-8")), out)
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
