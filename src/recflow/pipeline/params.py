"""The training DAG's trigger form, derived from the config defaults (one source of truth)."""

from __future__ import annotations

from typing import Any

from recflow.config import DATA_SOURCES, GATE_RULES, MODELS, PipelineConfig

DATA = "Data"
VALIDATION = "Validation"
MODEL = "Model and training"
GATE = "Evaluation and gate"
SERVING = "Registry and serving"


def _spec() -> dict[str, tuple[Any, dict[str, Any]]]:
    d = PipelineConfig()
    s, v, t, g = d.data.synthetic, d.validation, d.train, d.gate
    opt_str = {"type": ["null", "string"]}
    return {
        "data_source": (d.data.source, {"type": "string", "enum": list(DATA_SOURCES), "section": DATA,
            "title": "Data source", "description": "Where interactions come from: the built-in seeded synthetic generator, MovieLens-100K/1M folders, or a generic CSV/Parquet file with a column mapping."}),
        "data_path": (None, {**opt_str, "section": DATA, "title": "Data path",
            "description": "Folder (MovieLens) or interactions file (csv/parquet). Ignored for synthetic data."}),
        "items_path": (None, {**opt_str, "section": DATA, "title": "Items file (csv/parquet)",
            "description": "Item table with id, title and genres; required for csv/parquet sources."}),
        "users_path": (None, {**opt_str, "section": DATA, "title": "Users file (csv/parquet)",
            "description": "Optional user attribute table."}),
        "column_mapping": ({}, {"type": "object", "section": DATA, "title": "Column mapping",
            "description": "csv/parquet only: canonical column (user_id, item_id, rating, timestamp, title, genres) -> column name in your files."}),
        "synthetic_users": (s.n_users, {"type": "integer", "minimum": 10, "maximum": 100000, "section": DATA,
            "title": "Synthetic users", "description": "Number of users the synthetic generator creates."}),
        "synthetic_items": (s.n_items, {"type": "integer", "minimum": 10, "maximum": 50000, "section": DATA,
            "title": "Synthetic items", "description": "Catalogue size of the synthetic generator."}),
        "synthetic_seed": (s.seed, {"type": "integer", "minimum": 0, "section": DATA,
            "title": "Synthetic seed", "description": "Seed of the synthetic generator; change it to get fresh data with the same structure."}),
        "min_users": (v.min_users, {"type": "integer", "minimum": 1, "section": VALIDATION,
            "title": "Minimum users", "description": "Validation fails with fewer distinct users."}),
        "min_items": (v.min_items, {"type": "integer", "minimum": 1, "section": VALIDATION,
            "title": "Minimum items", "description": "Validation fails with fewer distinct items."}),
        "min_interactions": (v.min_interactions, {"type": "integer", "minimum": 1, "section": VALIDATION,
            "title": "Minimum interactions", "description": "Validation fails with fewer interaction rows."}),
        "min_rating": (v.min_rating, {"type": "number", "section": VALIDATION,
            "title": "Minimum rating", "description": "Lowest valid rating (inclusive)."}),
        "max_rating": (v.max_rating, {"type": "number", "section": VALIDATION,
            "title": "Maximum rating", "description": "Highest valid rating (inclusive)."}),
        "model": (t.model, {"type": "string", "enum": list(MODELS), "section": MODEL,
            "title": "Model", "description": "ranking_mlp: deep ranking network (embeddings + profile features -> Dense 64-32-1); popularity: the baseline itself."}),
        "epochs": (t.epochs, {"type": "integer", "minimum": 1, "maximum": 500, "section": MODEL,
            "title": "Epochs", "description": "Passes over the training interactions (negatives are re-sampled each epoch)."}),
        "batch_size": (t.batch_size, {"type": "integer", "minimum": 16, "maximum": 65536, "section": MODEL,
            "title": "Batch size", "description": "Examples per gradient step."}),
        "embedding_dim": (t.embedding_dim, {"type": "integer", "minimum": 2, "maximum": 512, "section": MODEL,
            "title": "Embedding size", "description": "Dimension of the user and item embeddings."}),
        "learning_rate": (t.learning_rate, {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "section": MODEL,
            "title": "Learning rate", "description": "Adam learning rate."}),
        "negatives": (t.negatives_per_positive, {"type": "integer", "minimum": 1, "maximum": 100, "section": MODEL,
            "title": "Negatives per positive", "description": "Sampled unseen items per observed interaction."}),
        "seed": (t.seed, {"type": "integer", "minimum": 0, "section": MODEL,
            "title": "Training seed", "description": "Seed for initialisation and negative sampling."}),
        "k": (d.eval_k, {"type": "integer", "minimum": 1, "maximum": 100, "section": GATE,
            "title": "K (cut-off)", "description": "Metrics are computed on the top K of a full ranking (HR@K, NDCG@K, MRR@K, coverage@K)."}),
        "gate_metric": (g.metric, {"type": "string", "enum": ["ndcg", "hr", "mrr"], "section": GATE,
            "title": "Gate metric", "description": "Metric compared with popularity and the champion."}),
        "floor_ndcg": (g.floors["ndcg"], {"type": "number", "minimum": 0, "maximum": 1, "section": GATE,
            "title": "NDCG@K floor", "description": "Absolute minimum validation NDCG@K."}),
        "floor_hr": (g.floors["hr"], {"type": "number", "minimum": 0, "maximum": 1, "section": GATE,
            "title": "HR@K floor", "description": "Absolute minimum validation HR@K."}),
        "min_lift_over_popularity": (g.min_lift_over_popularity, {"type": "number", "minimum": 0, "section": GATE,
            "title": "Lift over popularity", "description": "The candidate must beat popularity by this relative margin (0.1 = 10%)."}),
        "gate_rule": (g.rule, {"type": "string", "enum": list(GATE_RULES), "section": GATE,
            "title": "Champion rule", "description": "non-inferiority: no worse than the champion minus the tolerance (lets a model retrained on fresher data replace an equal one); superiority: strictly better by the minimum improvement."}),
        "tolerance": (g.tolerance, {"type": "number", "minimum": 0, "maximum": 1, "section": GATE,
            "title": "Non-inferiority tolerance", "description": "Absolute amount the gate metric may fall below the champion's."}),
        "min_improvement": (g.min_improvement, {"type": "number", "minimum": 0, "maximum": 1, "section": GATE,
            "title": "Superiority margin", "description": "Absolute improvement over the champion required by the superiority rule."}),
        "tracking_uri": (None, {**opt_str, "section": SERVING, "title": "MLflow tracking URI",
            "description": "Empty: a SQLite store under the work folder."}),
        "registered_model_name": (d.registry.model_name, {"type": "string", "minLength": 1, "section": SERVING,
            "title": "Registered model", "description": "MLflow registered model name."}),
        "serving_model_name": (d.serving.model_name, {"type": "string", "minLength": 1, "section": SERVING,
            "title": "Serving model name", "description": "Model name in TF Serving's model config."}),
        "model_base_path": (None, {**opt_str, "section": SERVING, "title": "Model base path",
            "description": "Folder that holds <model name>/<version>/ for TF Serving. Empty: under the work folder."}),
        "model_config_file": (None, {**opt_str, "section": SERVING, "title": "Model config file",
            "description": "TF Serving --model_config_file path. Empty: under the work folder."}),
        "serving_host": (d.serving.host, {"type": "string", "section": SERVING,
            "title": "Model server host", "description": "gRPC host of TF Serving or the local model server."}),
        "serving_port": (d.serving.grpc_port, {"type": "integer", "minimum": 1, "maximum": 65535, "section": SERVING,
            "title": "Model server gRPC port", "description": "gRPC port (TF Serving's default is 8500)."}),
        "top_k": (d.serving.top_k, {"type": "integer", "minimum": 1, "maximum": 1000, "section": SERVING,
            "title": "Served top K", "description": "How many items the serving signature returns per user (>= K)."}),
        "work_dir": (None, {**opt_str, "section": SERVING, "title": "Work folder",
            "description": "Where run data, the MLflow store and models live. Empty: $RECFLOW_HOME or ./var."}),
    }


def training_params() -> dict[str, Any]:
    """Airflow Params for the trigger form, grouped by section."""
    from airflow.sdk import Param

    return {name: Param(default, **schema) for name, (default, schema) in _spec().items()}
