"""Lazy Adam: Adam whose embedding updates touch only the rows in the batch.

Keras 3.15's ``Adam.update_step`` (TensorFlow backend) computes ``gradient - m`` and
``square(gradient) - v`` with ``keras.ops``, which turns an embedding's ``tf.IndexedSlices``
gradient into a dense tensor of the whole table; both moment slots and the table are then
rewritten in full at every step, so a step costs O(users x dim) and an epoch
O(events x users). (``TFOptimizer.assign*`` do scatter ``IndexedSlices`` values, but Adam
never hands them one; Keras' own sparse tests list Adam as densifying.)

This subclass applies ``IndexedSlices`` gradients lazily, as TF1's ``LazyAdamOptimizer`` and
TensorFlow Addons' ``LazyAdam`` did: duplicate indices are summed, the moments of the touched
rows are gathered, updated with the usual Adam rule (global step for the bias correction) and
scattered back, and only those rows of the variable move. Rows not in the batch, and their
moments, stay bit-identical. Dense gradients (MLP kernels, or any gradient that arrives
dense) take Keras' own dense path unchanged.

The difference from dense Adam: an untouched row's moments do not decay and its weights do
not keep moving on stale momentum. That is the usual trade for recommendation embeddings.

DP-SGD (``recflow.models.ranking_mlp.dp``) must stay dense: its Gaussian noise covers every coordinate
of every table, so each step really does change every row; the ranking network is compiled
with plain Adam when ``dp_enabled`` (``pointwise.embedding_optimizer``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from recflow.errors import ConfigError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


@functools.cache
def _lazy_adam_class() -> type:
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="recflow", name="LazyAdam")
    class LazyAdam(keras.optimizers.Adam):  # type: ignore[misc]
        """``keras.optimizers.Adam`` with lazy (row-sparse) updates for IndexedSlices."""

        def update_step(
            self, gradient: tf.Tensor, variable: keras.Variable, learning_rate: tf.Tensor
        ) -> None:
            if not isinstance(gradient, tf.IndexedSlices):
                super().update_step(gradient, variable, learning_rate)
                return None
            var = variable.value if isinstance(variable, keras.Variable) else variable
            dtype = var.dtype
            lr = tf.cast(learning_rate, dtype)
            step = tf.cast(self.iterations + 1, dtype)
            beta_1 = tf.cast(self.beta_1, dtype)
            beta_2 = tf.cast(self.beta_2, dtype)
            alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))

            # Sum the gradient of repeated rows (a user appears several times in a batch).
            rows, position = tf.unique(gradient.indices)
            grad = tf.math.unsorted_segment_sum(
                tf.cast(gradient.values, dtype), position, tf.shape(rows)[0]
            )
            index = self._get_variable_index(variable)
            m = self._momentums[index]
            v = self._velocities[index]
            m_var = m.value if isinstance(m, keras.Variable) else m
            v_var = v.value if isinstance(v, keras.Variable) else v
            m_rows = beta_1 * tf.gather(m_var, rows) + (1 - beta_1) * grad
            v_rows = beta_2 * tf.gather(v_var, rows) + (1 - beta_2) * tf.square(grad)
            m_var.scatter_update(tf.IndexedSlices(m_rows, rows))
            v_var.scatter_update(tf.IndexedSlices(v_rows, rows))
            delta = alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype))
            var.scatter_sub(tf.IndexedSlices(delta, rows))
            return None

    return LazyAdam


@functools.cache
def _row_embedding_class() -> type:
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="recflow", name="RowEmbedding")
    class RowEmbedding(keras.layers.Embedding):  # type: ignore[misc]
        """``keras.layers.Embedding`` that gathers rows straight from the variable.

        Keras' Embedding reads the whole table (``ops.take`` on the variable's value) and
        gathers from that copy; with lazy updates scattering into the same table in the
        step, TensorFlow then copies the whole table at every step (measured: ~10x fewer
        examples/s at 100k users). ``tf.gather`` on the ``tf.Variable`` is a ResourceGather:
        it reads only the looked-up rows and its gradient is the same IndexedSlices.
        """

        def call(self, inputs: tf.Tensor) -> tf.Tensor:
            if inputs.dtype not in ("int32", "int64"):
                inputs = tf.cast(inputs, "int32")
            table = self.embeddings
            table = table.value if isinstance(table, keras.Variable) else table
            return tf.cast(tf.gather(table, inputs), self.compute_dtype)

    return RowEmbedding


def row_embedding(*args: Any, **kwargs: Any) -> keras.layers.Embedding:
    """A RowEmbedding layer (``keras.layers.Embedding`` arguments)."""
    return _row_embedding_class()(*args, **kwargs)


def lazy_adam(learning_rate: float, **kwargs: Any) -> keras.optimizers.Adam:
    """A LazyAdam optimizer (``keras.optimizers.Adam`` arguments; amsgrad is not supported)."""
    if kwargs.get("amsgrad"):
        raise ConfigError(
            "lazy Adam: expected amsgrad=False, found True; use keras.optimizers.Adam for AMSGrad"
        )
    return _lazy_adam_class()(learning_rate=learning_rate, **kwargs)


def register() -> None:
    """Make ``LazyAdam`` and ``RowEmbedding`` known to ``keras.models.load_model``."""
    _lazy_adam_class()
    _row_embedding_class()
