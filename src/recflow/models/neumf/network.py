"""The NeuMF network (He et al., WWW 2017): GMF and MLP branches fused, in Keras 3.

gmf  = p_u^G * q_i^G                          (element-wise)
mlp  = MLP([p_u^M | q_i^M])                   (ReLU tower 2d -> d -> d/2)
logit(u, i) = h^T [gmf | mlp] + b
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recflow.config import TrainConfig
from recflow.models.pointwise import embedding_optimizer, steps_per_execution

if TYPE_CHECKING:
    import keras

TOWER = ("mlp_0", "mlp_1", "mlp_2")


def tower_sizes(dim: int) -> tuple[int, ...]:
    return (2 * dim, dim, max(1, dim // 2))


def build_neumf(n_users: int, n_items: int, cfg: TrainConfig) -> keras.Model:
    """A compiled Keras model (user_idx, item_idx) -> logit [B, 1]."""
    import keras

    from recflow.models.sparse_adam import row_embedding

    d = cfg.embedding_dim
    user = keras.Input(shape=(), dtype="int32", name="user")
    item = keras.Input(shape=(), dtype="int32", name="item")

    def emb(n: int, name: str) -> keras.layers.Layer:
        return row_embedding(
            n,
            d,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            # L2 on the rows looked up in the batch, not on the whole table: a table-wide
            # penalty has a dense gradient and would rewrite every row at every step.
            activity_regularizer=keras.regularizers.L2(1e-6),
            name=name,
        )

    gmf = keras.layers.Multiply()([emb(n_users, "gmf_user")(user), emb(n_items, "gmf_item")(item)])
    h = keras.layers.Concatenate()([emb(n_users, "mlp_user")(user), emb(n_items, "mlp_item")(item)])
    for name, size in zip(TOWER, tower_sizes(d), strict=True):
        h = keras.layers.Dense(size, activation="relu", name=name)(h)
    logit = keras.layers.Dense(1, name="out")(keras.layers.Concatenate()([gmf, h]))
    model = keras.Model([user, item], logit, name="neumf")
    model.compile(
        optimizer=embedding_optimizer(cfg),
        steps_per_execution=steps_per_execution(cfg),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return model
