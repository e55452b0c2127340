"""How far TF32 matmuls move scores, emulated on the CPU: the basis of ``TF32_RTOL``.

Ampere and newer GPUs compute float32 matmuls in TF32 by default: operands rounded to a 10-bit
mantissa, products accumulated in float32. Emulated here by rounding every matmul operand to
TF32 (bit masking, round to nearest even) and multiplying in float64, against float64 products
of the float32 operands. The error is measured as in ``recflow.serving.compare``: relative to
the largest |score| of the row. Shapes follow the model kinds: dot products (NeuMF/GMF-like),
EASE (binary history x item weights), a three-layer ranking MLP, a four-layer Mult-VAE.

    python bench/tf32_tolerance.py --out bench/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import describe, loadavg, summary


def tf32(x: np.ndarray) -> np.ndarray:
    bits = np.asarray(x, np.float32).copy().view(np.uint32)
    bits += np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))
    bits &= np.uint32(0xFFFFE000)
    return bits.view(np.float32)


def matmul(a: np.ndarray, b: np.ndarray, emulate: bool) -> np.ndarray:
    if emulate:
        a, b = tf32(a), tf32(b)
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


def models(rng: np.random.Generator) -> dict[str, Callable[[bool], np.ndarray]]:
    users = rng.normal(0, 0.3, (200, 64)).astype(np.float32)
    items = rng.normal(0, 0.3, (2000, 64)).astype(np.float32)
    history = (rng.random((200, 1700)) < 0.05).astype(np.float32)
    ease_b = rng.normal(0, 0.02, (1700, 1700)).astype(np.float32)
    pairs = rng.normal(0, 1, (5000, 64)).astype(np.float32)
    mlp = [rng.normal(0, 0.2, s).astype(np.float32) for s in [(64, 64), (64, 32), (32, 1)]]
    vae_in = (rng.random((100, 1700)) < 0.05).astype(np.float32)
    vae = [rng.normal(0, 1 / np.sqrt(n), (n, m)).astype(np.float32)
           for n, m in [(1700, 600), (600, 200), (200, 600), (600, 1700)]]  # fmt: skip

    def run_mlp(emulate: bool) -> np.ndarray:
        h = pairs
        for i, w in enumerate(mlp):
            h = matmul(h, w, emulate)
            h = np.maximum(h, 0) if i < 2 else h
        return h.reshape(50, 100)

    def run_vae(emulate: bool) -> np.ndarray:
        h = vae_in
        for i, w in enumerate(vae):
            h = matmul(h, w, emulate)
            h = np.tanh(h) if i < 3 else h
        return h

    return {
        "dot_d64": lambda e: matmul(users, items.T, e),
        "ease_1700": lambda e: matmul(history, ease_b, e),
        "mlp_3_layers": run_mlp,
        "vae_4_layers": run_vae,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from recflow.serving.compare import TF32_RTOL

    worst: dict[str, float] = {}
    for seed in range(args.seeds):
        for name, run in models(np.random.default_rng(seed)).items():
            exact, emulated = run(False).astype(np.float64), run(True).astype(np.float64)
            scale = np.abs(exact).max(axis=1, keepdims=True)
            err = float(np.max(np.abs(emulated - exact) / np.maximum(scale, 1e-30)))
            worst[name] = max(worst.get(name, 0.0), err)
    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**describe(), "loadavg": loadavg()},
        "seeds": args.seeds,
        "tolerance": TF32_RTOL,
        "largest_error_relative_to_row_max": worst,
        "within_tolerance": all(v <= TF32_RTOL for v in worst.values()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tf32_tolerance.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# TF32 score error, emulated (bench/tf32_tolerance.py)",
        "",
        f"`{result['command']}` on {result['date']}, {summary(result['machine'])}, "
        f"load {result['machine']['loadavg']}; "
        f"{args.seeds} seeds, largest over all.",
        "",
        f"| model shape | largest error / row's max score | tolerance {TF32_RTOL:g} |",
        "|---|---|---|",
        *[
            f"| {k} | {v:.2e} | {'ok' if v <= TF32_RTOL else 'EXCEEDED'} |"
            for k, v in worst.items()
        ],
        "",
    ]
    (args.out / "tf32_tolerance.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
