"""Model-kind settings: one block per model kind with settings of its own.

``recflow.train_config.TrainConfig`` holds each as a nested block (``ease``, ``sasrec``, ``sqn``,
``multvae``, ``blend``, ``dp``, ``two_stage``) and re-exports the classes; SASRec's two blocks
(``sasrec``, ``sqn``) are in :mod:`recflow.sasrec_settings`. Declared with
:func:`recflow.settings.setting` (see that module for what is derived).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recflow.settings import Settings, setting

MODEL = "Model and training"


@dataclass(frozen=True)
class EaseSettings(Settings):
    """model=ease: the closed-form item-item model (models/ease/)."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "ease_"

    l2: float = setting(
        500.0,
        "EASE lambda",
        "model=ease only: L2 weight of the closed-form item-item model; larger is smoother. Default: the item lambda bench/PROTOCOL.md chose on inner folds of MovieLens-100K's MS training part (leave-one-out folds chose 100; bench/results/quality.md).",
        gt=0,
        le=100000,
        flat="ease_lambda",
    )


@dataclass(frozen=True)
class MultvaeSettings(Settings):
    """model=multvae (models/multvae/; Liang et al. 2018): the paper's [N-600-200-600-N]
    network, input dropout 0.5, KL weight annealed to a cap; the blend's VAE part too."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "multvae_"

    epochs: int = setting(
        200,
        "Mult-VAE epochs",
        "model=multvae or blend: passes over all users' training rows. Default: chosen over 100 on inner folds of MovieLens-100K (MS and leave-one-out; bench/PROTOCOL.md, bench/results/quality.md).",
        ge=1,
        le=5000,
    )
    batch_size: int = setting(
        500,
        "Mult-VAE batch size",
        "model=multvae: users per gradient step (the paper uses 500).",
        ge=1,
        le=100000,
    )
    learning_rate: float = setting(
        0.001,
        "Mult-VAE learning rate",
        "model=multvae: Adam learning rate.",
        gt=0,
        le=1,
    )
    hidden: int = setting(
        600,
        "Mult-VAE hidden size",
        "model=multvae: tanh layer of the encoder and of the decoder (the paper uses 600).",
        ge=1,
        le=8192,
    )
    latent: int = setting(
        200,
        "Mult-VAE latent size",
        "model=multvae: dimension of the Gaussian latent code (the paper uses 200).",
        ge=1,
        le=4096,
    )
    dropout: float = setting(
        0.5,
        "Mult-VAE input dropout",
        "model=multvae: share of each user's normalised row dropped during training.",
        ge=0,
        lt=1,
    )
    beta_max: float = setting(
        1.0,
        "Mult-VAE KL cap (beta max)",
        "model=multvae or blend: final weight of the KL term. Default: chosen among 0.2 (the paper's), 0.5, 1.0, 2.0 on an inner split of MovieLens-100K's MS training part (bench/results/quality.md, design history; bench/PROTOCOL.md keeps it, not re-chosen).",
        ge=0,
        le=10,
    )
    anneal_epochs: int = setting(
        100,
        "Mult-VAE annealing epochs",
        "model=multvae: epochs over which the KL weight rises linearly from 0 to the cap; 0 starts at the cap.",
        ge=0,
        le=5000,
    )
    members: int = setting(
        2,
        "Mult-VAE ensemble members",
        "model=multvae or blend: networks trained side by side (own initialisation and noise); served scores are the mean of their standardised scores. Default: chosen among 1, 2, 4 on inner folds of MovieLens-100K's MS training part (leave-one-out folds chose 1; bench/PROTOCOL.md, bench/results/quality.md).",
        ge=1,
        le=32,
    )


@dataclass(frozen=True)
class BlendSettings(Settings):
    """model=blend (models/blend/): standardised scores of item EASE, user-side EASE and
    Mult-VAE (multvae settings), weighted. The defaults are the choices bench/PROTOCOL.md made
    on inner folds of MovieLens-100K's MS training part (bench/results/quality.md): the
    lambdas chosen for each part alone, then the weights on the simplex. Leave-one-out folds
    chose other values (item lambda 100, user lambda 200, weights 0.1/0.8/0.1)."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "blend_"

    item_weight: float = setting(
        0.0,
        "Blend: item EASE weight",
        "model=blend: weight of item EASE's standardised scores; 0 leaves it out. Default 0: the MS inner folds' best weights (item/user/vae) were 0/0.2/0.8 (bench/results/quality.md).",
        ge=0,
        le=100,
    )
    user_weight: float = setting(
        0.2,
        "Blend: user-side EASE weight",
        "model=blend: weight of user-side EASE's standardised scores (it inverts a users x users matrix: 0 for very large user bases). Default: the MS inner folds' choice (weights 0/0.2/0.8, bench/results/quality.md).",
        ge=0,
        le=100,
    )
    vae_weight: float = setting(
        0.8,
        "Blend: Mult-VAE weight",
        "model=blend: weight of the Mult-VAE ensemble's scores; 0 leaves it out. Default: the MS inner folds' choice (weights 0/0.2/0.8, bench/results/quality.md).",
        ge=0,
        le=100,
    )
    item_lambda: float = setting(
        500.0,
        "Blend: item EASE lambda",
        "model=blend: L2 weight of the item-item model inside the blend (unused while blend_item_weight is 0). Default: chosen on the MS inner folds (bench/results/quality.md).",
        gt=0,
        le=100000,
    )
    user_lambda: float = setting(
        400.0,
        "Blend: user-side EASE lambda",
        "model=blend: L2 weight of the user-user model inside the blend. Default: chosen on the MS inner folds (bench/results/quality.md).",
        gt=0,
        le=100000,
    )

    def rules(self) -> list[str]:
        if self.item_weight + self.user_weight + self.vae_weight <= 0:
            return [
                "blend weights: expected at least one of blend_item_weight, blend_user_weight, blend_vae_weight > 0, found all 0"
            ]
        return []


@dataclass(frozen=True)
class DpSettings(Settings):
    """DP-SGD for ranking_mlp (models/ranking_mlp/dp.py): per-example clipping to l2_clip, Gaussian
    noise of std noise_multiplier * l2_clip, epsilon reported at delta (None: 1/rows)."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "dp_"

    enabled: bool = setting(
        False,
        "Differential privacy (DP-SGD)",
        "model=ranking_mlp only: train with DP-SGD (per-example gradient clipping plus Gaussian noise, Poisson-sampled batches); the privacy budget epsilon is logged as train.dp_epsilon. It covers one training row (not a whole user) and the trained weights only: the frozen profile tables (genre preferences, activity, popularity) are not privatised.",
    )
    l2_clip: float = setting(
        1.0,
        "DP clipping norm",
        "dp_enabled only: each example's gradient is scaled down to at most this L2 norm.",
        gt=0,
        le=1000,
    )
    noise_multiplier: float = setting(
        1.1,
        "DP noise multiplier",
        "dp_enabled only: Gaussian noise std as a multiple of the clipping norm; larger gives a smaller epsilon and a less accurate model.",
        gt=0,
        le=100,
    )
    delta: float | None = setting(
        None,
        "DP delta",
        "dp_enabled only: delta at which epsilon is reported. Empty: 1 / training rows per epoch.",
        gt=0,
        lt=1,
    )


@dataclass(frozen=True)
class TwoStageSettings(Settings):
    """model=two_stage (models/two_stage/): the towers pick ``candidates`` items per request
    (brute-force dot product + top_k), the ranking MLP (TrainConfig's epochs, batch_size, ...)
    scores only those. Towers: in-batch softmax with logQ correction, lazy Adam
    (models/two_stage/towers.py)."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "two_stage_"

    candidates: int = setting(
        200,
        "Two-stage: candidates N",
        "model=two_stage: items the retrieval towers pick per request (dot product + top_k over the whole catalogue); the ranking MLP scores only these.",
        ge=1,
        le=1000000,
    )
    tower_dim: int = setting(
        32,
        "Two-stage: tower width",
        "model=two_stage: width of the user and item tower vectors.",
        ge=1,
        le=1024,
    )
    tower_epochs: int = setting(
        10,
        "Two-stage: tower epochs",
        "model=two_stage: passes over the distinct training pairs for the towers (the MLP uses epochs).",
        ge=1,
        le=1000,
    )
    tower_batch_size: int = setting(
        1024,
        "Two-stage: tower batch size",
        "model=two_stage: pairs per step; the other pairs of a batch are each positive's negatives (in-batch softmax).",
        ge=2,
        le=65536,
    )
    tower_learning_rate: float = setting(
        0.01,
        "Two-stage: tower learning rate",
        "model=two_stage: Adam step size of the towers (rows of the batch only).",
        gt=0,
        le=1,
    )
    tower_temperature: float = setting(
        0.2,
        "Two-stage: softmax temperature",
        "model=two_stage: the towers' cosine similarities are divided by this in the in-batch softmax.",
        gt=0,
        le=10,
    )
