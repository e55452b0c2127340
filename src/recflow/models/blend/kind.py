"""The zoo's ``fit`` and ``export`` of ``blend``: the parts' arrays and the weights through
``blend.npz``."""

from __future__ import annotations

from recflow.models.blend.export import export_saved
from recflow.models.blend.training import train_blend
from recflow.models.score_module import array_stages

BLEND_FILE = "blend.npz"

fit, export = array_stages(train_blend, export_saved, BLEND_FILE, "blend")
