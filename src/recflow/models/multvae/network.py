"""The Mult-VAE network: ``multvae_members`` encoder-decoder pairs side by side in one Keras
model, the KL term weighted by a variable the training anneals (see
:mod:`recflow.models.multvae`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from recflow.config import TrainConfig

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# Layer names, also the keys (with _kernel / _bias) of the saved weights.
ENCODER = ("enc_hidden", "enc_out")
DECODER = ("dec_hidden", "dec_out")


def build_multvae(n_items: int, cfg: TrainConfig) -> tuple[keras.Model, keras.Variable]:
    """(compiled Keras model x [B, N] -> logits [B, M, N], the beta variable the KL term reads).

    The M = ``multvae_members`` networks share nothing but the batches: each has its own
    initialisation, dropout masks and latent noise, and the loss is the sum of their losses,
    so each member's gradients are those it would get alone. Side by side, one step does M
    networks' work in the same few large matrix products, which keeps both cores busy where
    one small network would leave them waiting on per-step overhead.
    """
    import keras
    from keras import ops

    latent, members = cfg.multvae.latent, cfg.multvae.members
    beta = keras.Variable(0.0, trainable=False, name="kl_beta")

    def stacked_glorot(layer_seed: int) -> Callable[..., tf.Tensor]:
        # Glorot over each member's own [in, out] (a 3-D shape would count M in the fans).
        def init(shape: tuple[int, ...], dtype: str | None = None) -> tf.Tensor:
            return ops.stack(
                [
                    keras.initializers.GlorotUniform(seed=cfg.seed + 1000 * m + layer_seed)(
                        tuple(shape[1:]), dtype=dtype
                    )
                    for m in range(members)
                ]
            )

        return init

    class MemberDense(keras.layers.Layer):  # type: ignore[misc]
        """y[:, m] = activation(x[:, m] @ W[m] + b[m]); kernel [M, in, out], bias [M, out]."""

        def __init__(self, units: int, activation: str | None, layer_seed: int, **kw: Any):
            super().__init__(**kw)
            self.units, self.activation = units, keras.activations.get(activation)
            self.layer_seed = layer_seed

        def build(self, input_shape: tuple[int | None, ...]) -> None:
            fan_in = input_shape[-1]  # [batch, members, features]: only batch is unknown
            assert fan_in is not None
            self.kernel = self.add_weight(
                shape=(members, fan_in, self.units),
                initializer=stacked_glorot(self.layer_seed),
                name="kernel",
            )
            self.bias = self.add_weight(
                shape=(members, self.units), initializer="zeros", name="bias"
            )

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return self.activation(ops.einsum("bmi,mio->bmo", x, self.kernel) + self.bias)

    class Sample(keras.layers.Layer):  # type: ignore[misc]
        """z from (mu, log-variance); adds beta * KL as a loss; mu itself when not training."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed = keras.random.SeedGenerator(cfg.seed)

        def call(self, stats: tf.Tensor, training: bool | None = None) -> tf.Tensor:
            mu, log_var = stats[..., :latent], stats[..., latent:]
            # KL of N(mu, exp(lv)) from N(0, I): summed over latent dims and members, mean
            # over the batch (the sum over members keeps each member's gradient its own).
            kl = 0.5 * ops.sum(ops.exp(log_var) + ops.square(mu) - 1.0 - log_var, axis=(1, 2))
            self.add_loss(beta * ops.mean(kl))
            if not training:
                return mu
            eps = keras.random.normal(ops.shape(mu), seed=self.seed)
            return mu + ops.exp(0.5 * log_var) * eps

    x = keras.Input(shape=(n_items,), name="x")
    h = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
    h = keras.layers.Lambda(
        lambda t: ops.repeat(ops.expand_dims(t, 1), members, axis=1), name="members"
    )(h)
    # Dropout on [B, M, N] draws an independent mask per member.
    h = keras.layers.Dropout(cfg.multvae.dropout, seed=cfg.seed, name="input_dropout")(h)
    h = MemberDense(cfg.multvae.hidden, "tanh", 1, name=ENCODER[0])(h)
    stats = MemberDense(2 * latent, None, 2, name=ENCODER[1])(h)
    z = Sample(name="sample")(stats)
    h = MemberDense(cfg.multvae.hidden, "tanh", 3, name=DECODER[0])(z)
    logits = MemberDense(n_items, None, 4, name=DECODER[1])(h)
    model = keras.Model(x, logits, name="multvae")

    def multinomial_nll(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        per_member = -ops.sum(y_true[:, None, :] * ops.log_softmax(y_pred, axis=-1), axis=-1)
        return ops.sum(per_member, axis=-1)

    model.compile(optimizer=keras.optimizers.Adam(cfg.multvae.learning_rate), loss=multinomial_nll)
    return model, beta
