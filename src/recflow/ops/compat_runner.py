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


def _as_numpy(array, np):  # type: ignore[no-untyped-def]
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[str])(array)
    return array


def run(models_dir: Path, inputs: dict, out: Path) -> dict:  # type: ignore[type-arg]
    """Each model loaded as TF Serving loads it (MetaGraph and checkpoint into a session, as
    recflow.savedmodel.load_signatures does; this file may import nothing of recflow), each
    signature run on its tensor names."""
    import numpy as np
    import tensorflow as tf

    arrays: dict[str, object] = {}
    meta: dict[str, object] = {"tensorflow": tf.__version__, "models": {}}
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            loaded = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(model_dir))
            signatures = {}
            for sig_name in sorted(k for k in loaded.signature_def if not k.startswith("__")):
                sig = loaded.signature_def[sig_name]
                feed = {}
                for name, info in sig.inputs.items():
                    if name not in inputs:
                        raise SystemExit(
                            f"{model_dir.name}/{sig_name}: no values for input {name!r}"
                        )
                    dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
                    feed[graph.get_tensor_by_name(info.name)] = np.asarray(inputs[name], dtype)
                fetch = {key: info.name for key, info in sig.outputs.items()}
                result = session.run(fetch, feed)
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
