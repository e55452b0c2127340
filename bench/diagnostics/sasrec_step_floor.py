"""What else could make a SASRec training step faster (sasrec-step-floor.md).

    python bench/diagnostics/sasrec_step_floor.py step [--threads INTRA,INTER] [--fused-adam]
    python bench/diagnostics/sasrec_step_floor.py body [--xla] [--nodrop] [--bf16]

``step`` times the shipped training step (:func:`make_step`, 256 sampled negatives over 50,000
items) on 200 batches of 128 windows of similar length, widths drawn as at 20M events (the
windows' lengths there: median 16, 22% full); ``--threads`` sets TensorFlow's intra- and
inter-op pools; ``--fused-adam`` applies dense gradients with TensorFlow's fused
``ResourceApplyAdam`` kernel instead of Keras' per-variable ops. ``body`` times the Transformer
alone (forward and backward, 128 windows of 25), with XLA, without dropout or in bfloat16.
The windows are random items: the cost of a step does not depend on which items they hold.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

N_ITEMS, BATCH, WIDTH, WARM, TIMED = 50_000, 128, 25, 20, 200


def _widths(rng: np.random.Generator) -> np.ndarray:
    """Batch widths with the 20M windows' length profile (22% full, the rest ~uniform)."""
    full = rng.random(WARM + TIMED) < 0.22
    return np.where(full, 50, rng.integers(2, 50, WARM + TIMED))


def fuse_dense_adam() -> None:
    """Dense gradients through TensorFlow's fused Adam kernel (same update rule)."""
    import keras
    import tensorflow as tf

    from recflow.models.sparse_adam import _lazy_adam_class

    cls: Any = _lazy_adam_class()  # patched below: a diagnostic, not shipped code
    sparse_update = cls.update_step

    def unwrap(v: object) -> tf.Variable:
        return v.value if isinstance(v, keras.Variable) else v

    def update_step(self, gradient, variable, learning_rate):  # type: ignore[no-untyped-def]
        if isinstance(gradient, tf.IndexedSlices):
            return sparse_update(self, gradient, variable, learning_rate)
        var, i = unwrap(variable), self._get_variable_index(variable)
        dtype, step = var.dtype, tf.cast(self.iterations + 1, var.dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle,
            m=unwrap(self._momentums[i]).handle,
            v=unwrap(self._velocities[i]).handle,
            beta1_power=tf.pow(b1, step),
            beta2_power=tf.pow(b2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=b1,
            beta2=b2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )
        return None

    cls.update_step = update_step


def time_step(args: argparse.Namespace) -> float:
    import tensorflow as tf

    from recflow.config import train_config
    from recflow.models.sasrec import training as t
    from recflow.models.sasrec.network import SasrecParams, build_network
    from recflow.models.sparse_adam import lazy_adam

    if args.fused_adam:
        fuse_dense_adam()
    cfg = train_config()
    model = build_network(SasrecParams.from_config(cfg, N_ITEMS, q_head=False))
    step = t.make_step(model, None, lazy_adam(0.001, beta_2=0.98), cfg, 256)
    rng = np.random.default_rng(0)
    batches = []
    for width in _widths(rng):
        items = tf.constant(rng.integers(1, N_ITEMS + 1, (BATCH, width)), tf.int32)
        zeros = tf.zeros((BATCH, width))
        batches.append((items, items, zeros, zeros, tf.ones((BATCH, width), tf.bool)))
    for batch in batches[:WARM]:
        step(*batch, tf.constant(1.0))
    start = time.perf_counter()
    for batch in batches[WARM:]:
        out = step(*batch, tf.constant(1.0))
    float(out[0])
    return (time.perf_counter() - start) / TIMED


def time_body(args: argparse.Namespace) -> float:
    import keras
    import tensorflow as tf

    if args.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    from recflow.config import train_config
    from recflow.models.sasrec.network import SasrecParams, build_network

    cfg = train_config(None, **({"sasrec_dropout": 0.0} if args.nodrop else {}))
    model = build_network(SasrecParams.from_config(cfg, N_ITEMS, q_head=False))
    dense = [v for v in model.trainable_variables if "embedding" not in v.path]
    items = tf.constant(np.random.default_rng(0).integers(1, N_ITEMS, (BATCH, WIDTH)), tf.int32)

    @tf.function(jit_compile=args.xla, autograph=False)
    def forward_backward(seq: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(model(seq, training=True), tf.float32) ** 2)
        grads = [g for g in tape.gradient(loss, dense) if g is not None]
        return loss + tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])

    for _ in range(WARM):
        forward_backward(items)
    start = time.perf_counter()
    for _ in range(TIMED):
        out = forward_backward(items)
    float(out)
    return (time.perf_counter() - start) / TIMED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("step", "body"))
    parser.add_argument("--threads", help="INTRA,INTER op threads (default: TensorFlow's)")
    parser.add_argument("--fused-adam", action="store_true")
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--nodrop", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    if args.threads:
        intra, inter = (int(n) for n in args.threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    cpu = time.process_time()
    wall = time.perf_counter()
    seconds = time_step(args) if args.what == "step" else time_body(args)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    flags = " ".join(f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v is True)
    threads = f" --threads {args.threads}" if args.threads else ""
    print(
        f"{args.what}{threads} {flags}: {1000 * seconds:.2f} ms, CPU/wall {share:.2f} (whole run)"
    )


if __name__ == "__main__":
    main()
