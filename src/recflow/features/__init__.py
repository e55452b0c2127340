"""Leave-last-out split and training-only features (index maps, profiles)."""

from recflow.features.profiles import build_features, load_features, profile_tables, save_features
from recflow.features.split import load_split, save_split, split_leave_last_out

__all__ = [
    "build_features",
    "load_features",
    "load_split",
    "profile_tables",
    "save_features",
    "save_split",
    "split_leave_last_out",
]
