"""The zoo's ``fit`` and ``export`` of ``multvae``: named weights through
``multvae_weights.npz``."""

from __future__ import annotations

from recflow.models.multvae.export import export_multvae
from recflow.models.multvae.training import train_multvae
from recflow.models.score_module import array_stages

WEIGHTS_FILE = "multvae_weights.npz"

fit, export = array_stages(train_multvae, export_multvae, WEIGHTS_FILE, "Mult-VAE")
