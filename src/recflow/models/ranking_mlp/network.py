"""The deep ranking network: (user, item) -> probability that the user interacts with the item.

The network is built from three plain functional sub-models so that scoring one user against
the whole catalogue does not repeat the per-user and per-item work for every pair:

    user_tower(user_idx) -> [user embedding | genre prefs | activity]
    item_tower(item_idx) -> [item embedding | genres | popularity]
    head(concat(user, item)) -> Dense(64, relu) -> Dense(32, relu) -> Dense(1, sigmoid)

Profile features are frozen ``Embedding`` tables initialised from ``Features``; the trained
embeddings are ``RowEmbedding`` layers (``models.sparse_adam``: updates touch only the rows in a
batch), the one custom class, registered before a saved model is loaded. Every weight ends up
as an ordinary variable in the SavedModel, which needs no custom code to serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.config import TrainConfig
from recflow.models.pointwise import embedding_optimizer, steps_per_execution
from recflow.types import Features

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

USER_TOWER = "user_tower"
ITEM_TOWER = "item_tower"
HEAD = "head"

# Pairs per forward pass when scoring users x catalogue; bounds memory to ~64 MB of activations.
MAX_PAIRS_PER_BATCH = 262_144


def _frozen_table(name: str, table: np.ndarray) -> tuple[keras.layers.Layer, np.ndarray]:
    """A non-trainable Embedding for ``table`` plus the values to load once it is built.

    The values are set as weights, not as a Constant initializer, so the model's saved config
    stays small (a Constant would copy the whole table into config.json).
    """
    table = np.asarray(table, dtype=np.float32)
    if table.ndim == 1:
        table = table[:, None]
    from recflow.models.sparse_adam import row_embedding

    layer = row_embedding(
        input_dim=table.shape[0],
        output_dim=table.shape[1],
        embeddings_initializer="zeros",
        trainable=False,
        name=name,
    )
    return layer, table


def build_ranking_mlp(features: Features, cfg: TrainConfig) -> keras.Model:
    """A compiled (user_idx, item_idx) -> [B, 1] sigmoid model over ``features``' index space."""
    import keras

    from recflow.models.sparse_adam import row_embedding

    n_genres = int(features.item_genres.shape[1])
    tables = {
        "user_genre_pref": features.user_genre_pref,
        "user_activity": features.user_activity,
        "item_genres": features.item_genres,
        "item_popularity": features.item_popularity,
    }
    frozen = {name: _frozen_table(name, values) for name, values in tables.items()}
    user_in = keras.Input(shape=(), dtype="int32", name="user_idx")
    user_parts = [
        row_embedding(features.n_users, cfg.embedding_dim, name="user_embedding")(user_in),
        frozen["user_genre_pref"][0](user_in),
        frozen["user_activity"][0](user_in),
    ]
    user_tower = keras.Model(
        user_in, keras.layers.Concatenate(name="user_vector")(user_parts), name=USER_TOWER
    )

    item_in = keras.Input(shape=(), dtype="int32", name="item_idx")
    item_parts = [
        row_embedding(features.n_items, cfg.embedding_dim, name="item_embedding")(item_in),
        frozen["item_genres"][0](item_in),
        frozen["item_popularity"][0](item_in),
    ]
    item_tower = keras.Model(
        item_in, keras.layers.Concatenate(name="item_vector")(item_parts), name=ITEM_TOWER
    )

    width = 2 * (cfg.embedding_dim + n_genres + 1)
    pair_in = keras.Input(shape=(width,), name="pair_vector")
    x = pair_in
    for units in (64, 32):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{units}")(x)
        if cfg.head_dropout > 0:  # training only: serving calls the head in inference mode
            x = keras.layers.Dropout(cfg.head_dropout, seed=cfg.seed, name=f"dropout_{units}")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    head = keras.Model(pair_in, out, name=HEAD)

    u = keras.Input(shape=(), dtype="int32", name="user_idx")
    i = keras.Input(shape=(), dtype="int32", name="item_idx")
    pair = keras.layers.Concatenate(name="pair")([user_tower(u), item_tower(i)])
    model = keras.Model([u, i], head(pair), name="ranking_mlp")
    for layer, values in frozen.values():
        layer.set_weights([values])
    model.compile(
        optimizer=embedding_optimizer(cfg),
        loss=keras.losses.BinaryCrossentropy(),
        steps_per_execution=steps_per_execution(cfg),
    )
    return model


def score_matrix(model: keras.Model, user_idx: tf.Tensor, n_items: int) -> tf.Tensor:
    """Scores [B, N] of users ``user_idx`` (int tensor [B]) against items 0..N-1.

    Works eagerly and inside a ``tf.function`` (the export traces it); the caller bounds B so
    that B * N pairs fit in memory.
    """
    from keras import ops

    user_tower = model.get_layer(USER_TOWER)
    item_tower = model.get_layer(ITEM_TOWER)
    head = model.get_layer(HEAD)
    users = user_tower(ops.cast(user_idx, "int32"))  # [B, F]
    items = item_tower(ops.arange(n_items, dtype="int32"))  # [N, F]
    b = ops.shape(users)[0]
    pairs = ops.concatenate(
        [
            ops.broadcast_to(users[:, None, :], (b, n_items, users.shape[-1])),
            ops.broadcast_to(items[None, :, :], (b, n_items, items.shape[-1])),
        ],
        axis=-1,
    )
    flat = ops.reshape(pairs, (-1, users.shape[-1] + items.shape[-1]))
    return ops.reshape(head(flat), (b, n_items))


def users_per_batch(n_items: int) -> int:
    """How many users to score at once so that users x items stays under MAX_PAIRS_PER_BATCH."""
    return max(1, MAX_PAIRS_PER_BATCH // max(1, n_items))
