"""The zoo's ``fit`` and ``export`` of ``neumf``: named weights through ``neumf_weights.npz``."""

from __future__ import annotations

from recflow.models.neumf.export import export_neumf
from recflow.models.neumf.training import train_neumf
from recflow.models.score_module import array_stages

WEIGHTS_FILE = "neumf_weights.npz"

fit, export = array_stages(train_neumf, export_neumf, WEIGHTS_FILE, "NeuMF")
