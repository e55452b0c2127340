"""Training settings: the shared ones, and one nested block per model kind that needs its own.

Declared with :func:`recflow.settings.setting` (see that module for what is derived).
The model kinds are the zoo's (``recflow.models.zoo``): the only list of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from recflow.model_settings import (
    MODEL,
    BlendSettings,
    DpSettings,
    EaseSettings,
    MultvaeSettings,
    TwoStageSettings,
)
from recflow.sasrec_settings import SasrecSettings, SqnSettings
from recflow.settings import Settings, block, setting

__all__ = [
    "DISTRIBUTIONS",
    "ENV_TRAIN_DISTRIBUTION",
    "MODEL",
    "BlendSettings",
    "DpSettings",
    "EaseSettings",
    "MultvaeSettings",
    "SasrecSettings",
    "SqnSettings",
    "TrainConfig",
    "TwoStageSettings",
    "model_kinds",
]

ENV_TRAIN_DISTRIBUTION = "RECFLOW_TRAIN_DISTRIBUTION"
DISTRIBUTIONS: tuple[str, ...] = ("default", "mirrored", "multi_worker")


def model_kinds() -> tuple[str, ...]:
    """The zoo's kinds, in the order the form lists them (imported on use: no cycle)."""
    from recflow.models.zoo import kind_names

    return kind_names()


def _env_distribution() -> str:
    return os.environ.get(ENV_TRAIN_DISTRIBUTION, "") or "default"


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings shared by the kinds (ranking_mlp and neumf use them directly) and one block
    per kind that has its own."""

    FORM_SECTION: ClassVar[str] = MODEL

    model: str = setting(
        "ranking_mlp",
        "Model",
        "ranking_mlp: deep ranking network (embeddings + profile features -> Dense 64-32-1); popularity: the baseline itself; ease: closed-form item-item model (Steck 2019); neumf: GMF + MLP (He et al. 2017); sasrec: causal Transformer over each user's item sequence (Kang & McAuley 2018), sasrec_sqn: the same plus an SQN Q-learning head (Xin et al. 2020), both with sasrec_* settings; multvae: variational autoencoder over each user's item row (Liang et al. 2018), with multvae_* settings; blend: item EASE + user-side EASE + Mult-VAE, standardised and weighted (blend_* settings; defaults: the inner-fold choice on MovieLens-100K's MS protocol, user-side EASE + Mult-VAE); other kinds are described in the model zoo.",
        choices=model_kinds,
    )
    epochs: int = setting(
        5,
        "Epochs",
        "Passes over the training interactions (negatives are re-sampled each epoch).",
        ge=1,
        le=500,
    )
    batch_size: int = setting(
        512,
        "Batch size",
        "Examples per gradient step.",
        ge=16,
        le=65536,
    )
    embedding_dim: int = setting(
        32,
        "Embedding size",
        "Dimension of the user and item embeddings.",
        ge=2,
        le=512,
    )
    learning_rate: float = setting(
        0.002,
        "Learning rate",
        "Adam learning rate.",
        gt=0,
        le=1,
    )
    negatives_per_positive: int = setting(
        4,
        "Negatives per positive",
        "Sampled unseen items per observed interaction.",
        ge=1,
        le=100,
        flat="negatives",
    )
    head_dropout: float = setting(
        0.0,
        "Ranking head dropout",
        "model=ranking_mlp: dropout rate after each hidden layer of the head (Dense 64 and Dense 32) while training; 0 = none. Regularises the network on small or sparse data.",
        ge=0,
        le=0.9,
    )
    seed: int = setting(
        42,
        "Training seed",
        "Seed for initialisation and negative sampling.",
        ge=0,
    )
    # Same batches and updates, less per-step Python overhead (about 2x examples/s at batch
    # 512 on 2 cores).
    steps_per_execution: int = setting(
        16,
        "Steps per execution",
        "model=ranking_mlp/neumf/two_stage (both its networks): batches run per call of the compiled train step (same updates, less per-step overhead).",
        ge=1,
        le=1024,
    )
    progress_seconds: float = setting(
        30.0,
        "Progress interval (s)",
        "Seconds between progress lines (examples/s, ETA) in the task log during training, evaluation and large fits (recflow.progress); 0 = off.",
        ge=0,
    )
    # tf.distribute strategy the model is built and fitted under (see models/ranking_mlp/training.py).
    distribution: str = setting(
        title="Distribution strategy",
        help=f"From ${ENV_TRAIN_DISTRIBUTION}: default (one device), mirrored (all local GPUs), multi_worker (TF_CONFIG cluster).",
        factory=_env_distribution,
        choices=DISTRIBUTIONS,
        param=False,
    )
    ease: EaseSettings = block(EaseSettings)
    sasrec: SasrecSettings = block(SasrecSettings)
    sqn: SqnSettings = block(SqnSettings)
    multvae: MultvaeSettings = block(MultvaeSettings)
    blend: BlendSettings = block(BlendSettings)
    dp: DpSettings = block(DpSettings)
    two_stage: TwoStageSettings = block(TwoStageSettings)

    def rules(self) -> list[str]:
        out = []
        if self.dp.enabled and self.model != "ranking_mlp":
            # Only the ranking network has a DP-SGD step; a silent non-private fit would mislead.
            out.append(
                f"dp_enabled: DP-SGD exists for model 'ranking_mlp' only, found {self.model!r}"
            )
        if self.dp.enabled and self.distribution == "multi_worker":
            # Per-example clipping needs every example's gradient on one replica (a mirrored
            # strategy is checked at training time, when its replica count is known).
            out.append(
                f"dp_enabled: DP-SGD runs on one device, found distribution {self.distribution!r} ({ENV_TRAIN_DISTRIBUTION}); set it to 'default' or turn dp_enabled off"
            )
        return out
