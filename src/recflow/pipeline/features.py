"""Stage 3: chronological leave-last-out split, then features from the training part only."""

from __future__ import annotations

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import FEATURES_JSON
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, int]:
    from recflow.data import read_dataset
    from recflow.features import (
        build_features,
        profile_tables,
        save_features,
        save_split,
        split_leave_last_out,
    )

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    ds = read_dataset(ctx.data_dir)
    split = split_leave_last_out(ds.interactions)
    save_split(split, ctx.split_dir)
    features = build_features(split.train, ds.items, ds.users)
    save_features(features, ctx.features_dir)
    user_profiles, item_profiles = profile_tables(features)
    profiles_dir = ctx.run_dir / "profiles"
    profiles_dir.mkdir(parents=True, exist_ok=True)
    user_profiles.to_parquet(profiles_dir / "user_profiles.parquet", index=False)
    item_profiles.to_parquet(profiles_dir / "item_profiles.parquet", index=False)
    summary = {
        "train_rows": int(len(split.train)),
        "validation_users": int(len(split.validation)),
        "test_users": int(len(split.test)),
        "users": features.n_users,
        "items": features.n_items,
        "genres": len(features.genres),
    }
    registry.log_metrics(mlflow_run, {f"split.{k}": float(v) for k, v in summary.items()})
    ctx.write_json(FEATURES_JSON, summary)
    say(
        f"features: {summary['train_rows']} training events, {summary['validation_users']} "
        f"validation users, {summary['test_users']} test users, {summary['genres']} genres"
    )
    return summary
