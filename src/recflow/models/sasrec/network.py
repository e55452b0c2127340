"""The SASRec network (Kang & McAuley, ICDM 2018): a causal Transformer over left-padded item
sequences, with the supervised head (logits tied to the item embeddings) and, for SQN, a Q
head over the catalogue."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import ConfigError
from recflow.models.sasrec.sequences import PAD

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


HEADS = ("supervised", "q")


class SasrecNet(Protocol):
    """What training and export use of the network (a ``keras.Model`` subclass made on first
    use by :func:`_network_class`, so that Keras stays out of import time)."""

    p: SasrecParams
    item_embedding: keras.layers.Embedding
    item_bias: keras.Variable
    trainable_variables: list[keras.Variable]
    variables: list[keras.Variable]
    weights: list[keras.Variable]

    def __call__(self, seq: tf.Tensor, training: bool = False) -> tf.Tensor: ...

    def logits(self, hidden: tf.Tensor) -> tf.Tensor: ...

    def q_values(self, hidden: tf.Tensor) -> tf.Tensor: ...

    def head_scores(self, seq: tf.Tensor, head: str) -> tf.Tensor: ...

    def save_weights(self, path: Path) -> None: ...

    def load_weights(self, path: Path) -> None: ...

    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: list[np.ndarray]) -> None: ...


@dataclass(frozen=True)
class SasrecParams:
    """Architecture; enough to rebuild the network before loading its weights.

    Built from the checked settings block (``TrainConfig.sasrec``; bounds and the heads/dim
    rule are declared there) or read back from the run's meta file.
    """

    n_items: int
    max_len: int
    dim: int
    blocks: int
    heads: int
    dropout: float
    q_head: bool = False

    @classmethod
    def from_config(cls, cfg: TrainConfig, n_items: int, *, q_head: bool) -> SasrecParams:
        s = cfg.sasrec
        return cls(n_items, s.max_len, s.dim, s.blocks, s.heads, s.dropout, q_head=q_head)


@functools.cache
def _network_class() -> type:
    import keras
    from keras import layers, ops

    from recflow.models.sparse_adam import row_embedding

    class SasrecNet(keras.Model):  # type: ignore[misc]
        """Hidden states [B, L, dim] of left-padded sequences; two heads on top."""

        def __init__(self, p: SasrecParams) -> None:
            super().__init__(name="sasrec")
            self.p = p
            self.item_embedding = row_embedding(p.n_items + 1, p.dim, name="item_embedding")
            self.position_embedding = layers.Embedding(p.max_len, p.dim, name="position_embedding")
            self.input_dropout = layers.Dropout(p.dropout)
            self.attn_norm = [layers.LayerNormalization(epsilon=1e-6) for _ in range(p.blocks)]
            self.attn = [
                layers.MultiHeadAttention(p.heads, p.dim // p.heads, dropout=p.dropout)
                for _ in range(p.blocks)
            ]
            self.ffn_norm = [layers.LayerNormalization(epsilon=1e-6) for _ in range(p.blocks)]
            self.ffn_in = [layers.Dense(p.dim, activation="relu") for _ in range(p.blocks)]
            self.ffn_out = [layers.Dense(p.dim) for _ in range(p.blocks)]
            self.dropout = layers.Dropout(p.dropout)
            self.final_norm = layers.LayerNormalization(epsilon=1e-6)
            self.item_bias = self.add_weight(
                shape=(p.n_items,), initializer="zeros", name="item_bias"
            )
            self.q_head = layers.Dense(p.n_items, name="q_head") if p.q_head else None

        def build(self, input_shape: tuple[int | None, ...]) -> None:
            # Sub-layers build on the first call (build_network makes one, eagerly).
            self.built = True

        def call(self, seq: tf.Tensor, training: bool = False) -> tf.Tensor:
            real = ops.not_equal(seq, PAD)
            keep = ops.cast(real, self.compute_dtype)[..., None]
            length = ops.shape(seq)[1]
            x = self.item_embedding(seq) * math.sqrt(self.p.dim)
            # Positions count from the right (the newest item is always max_len - 1), so a
            # batch trimmed of its all-padding columns reads the same embeddings as a full one.
            positions = ops.arange(self.p.max_len - length, self.p.max_len)
            x = x + self.position_embedding(positions)[None, :, :]
            x = self.input_dropout(x, training=training) * keep
            # Keys must be real items; causality is added by the layer.
            key_mask = ops.broadcast_to(real[:, None, :], (ops.shape(seq)[0], length, length))
            for b in range(self.p.blocks):
                h = self.attn_norm[b](x)
                a = self.attn[b](
                    h, h, attention_mask=key_mask, use_causal_mask=True, training=training
                )
                x = x + self.dropout(a, training=training)
                h = self.ffn_norm[b](x)
                f = self.ffn_out[b](self.dropout(self.ffn_in[b](h), training=training))
                x = (x + self.dropout(f, training=training)) * keep
            return self.final_norm(x)

        def item_matrix(self) -> tf.Tensor:
            return self.item_embedding.embeddings[1:]  # output layer tied to the inputs

        def logits(self, hidden: tf.Tensor) -> tf.Tensor:
            return ops.matmul(hidden, ops.transpose(self.item_matrix())) + self.item_bias

        def q_values(self, hidden: tf.Tensor) -> tf.Tensor:
            if self.q_head is None:
                raise ConfigError("q head: expected a network built with q_head=True, found none")
            return self.q_head(hidden)

        def head_scores(self, seq: tf.Tensor, head: str) -> tf.Tensor:
            """Scores [B, N] of the state after the last position of ``seq``."""
            last = self.call(seq, training=False)[:, -1, :]
            return self.q_values(last) if head == "q" else self.logits(last)

    return SasrecNet


def build_network(p: SasrecParams) -> SasrecNet:
    """A built SASRec network (all weights created, so weights can be loaded or copied)."""
    net = _network_class()(p)
    hidden = net(np.zeros((1, p.max_len), np.int32))
    net.logits(hidden)
    if p.q_head:
        net.q_values(hidden)
    return net


def score_sequences(model: SasrecNet, padded: np.ndarray, head: str = "supervised") -> np.ndarray:
    """Scores [B, N] of left-padded histories (item index + 1) with the chosen head."""
    if head not in HEADS:
        raise ConfigError(f"sqn_serve_head: expected one of {HEADS}, found {head!r}")
    out = [
        np.asarray(model.head_scores(padded[i : i + 256], head), np.float32)
        for i in range(0, padded.shape[0], 256)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.p.n_items), np.float32)
