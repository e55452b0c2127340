"""The training DAG's trigger form, derived from the config defaults (one source of truth)."""

from __future__ import annotations

from typing import Any

from recflow.config import DATA_SOURCES, GATE_RULES, MODELS, PipelineConfig

DATA = "Data"
VALIDATION = "Validation"
MODEL = "Model and training"
GATE = "Evaluation and gate"
DRIFT = "Drift and skew"
SERVING = "Registry and serving"


def _spec() -> dict[str, tuple[Any, dict[str, Any]]]:
    d = PipelineConfig()
    s, v, t, g = d.data.synthetic, d.validation, d.train, d.gate
    opt_str = {"type": ["null", "string"]}
    return {
        "data_source": (
            d.data.source,
            {
                "type": "string",
                "enum": list(DATA_SOURCES),
                "section": DATA,
                "title": "Data source",
                "description": "Where interactions come from: the built-in seeded synthetic generator, MovieLens-100K/1M folders, or a generic CSV/Parquet file with a column mapping.",
            },
        ),
        "data_path": (
            None,
            {
                **opt_str,
                "section": DATA,
                "title": "Data path",
                "description": "Folder (MovieLens) or interactions file (csv/parquet). Ignored for synthetic data.",
            },
        ),
        "items_path": (
            None,
            {
                **opt_str,
                "section": DATA,
                "title": "Items file (csv/parquet)",
                "description": "Item table with id, title and genres; required for csv/parquet sources.",
            },
        ),
        "users_path": (
            None,
            {
                **opt_str,
                "section": DATA,
                "title": "Users file (csv/parquet)",
                "description": "Optional user attribute table.",
            },
        ),
        "column_mapping": (
            {},
            {
                "type": "object",
                "section": DATA,
                "title": "Column mapping",
                "description": "csv/parquet only: canonical column (user_id, item_id, rating, timestamp, title, genres) -> column name in your files.",
            },
        ),
        "synthetic_users": (
            s.n_users,
            {
                "type": "integer",
                "minimum": 10,
                "maximum": 100000,
                "section": DATA,
                "title": "Synthetic users",
                "description": "Number of users the synthetic generator creates.",
            },
        ),
        "synthetic_items": (
            s.n_items,
            {
                "type": "integer",
                "minimum": 10,
                "maximum": 50000,
                "section": DATA,
                "title": "Synthetic items",
                "description": "Catalogue size of the synthetic generator.",
            },
        ),
        "synthetic_seed": (
            s.seed,
            {
                "type": "integer",
                "minimum": 0,
                "section": DATA,
                "title": "Synthetic seed",
                "description": "Seed of the synthetic generator; change it to get fresh data with the same structure.",
            },
        ),
        "min_users": (
            v.min_users,
            {
                "type": "integer",
                "minimum": 1,
                "section": VALIDATION,
                "title": "Minimum users",
                "description": "Validation fails with fewer distinct users.",
            },
        ),
        "min_items": (
            v.min_items,
            {
                "type": "integer",
                "minimum": 1,
                "section": VALIDATION,
                "title": "Minimum items",
                "description": "Validation fails with fewer distinct items.",
            },
        ),
        "min_interactions": (
            v.min_interactions,
            {
                "type": "integer",
                "minimum": 1,
                "section": VALIDATION,
                "title": "Minimum interactions",
                "description": "Validation fails with fewer interaction rows.",
            },
        ),
        "min_rating": (
            v.min_rating,
            {
                "type": "number",
                "section": VALIDATION,
                "title": "Minimum rating",
                "description": "Lowest valid rating (inclusive).",
            },
        ),
        "max_rating": (
            v.max_rating,
            {
                "type": "number",
                "section": VALIDATION,
                "title": "Maximum rating",
                "description": "Highest valid rating (inclusive).",
            },
        ),
        "model": (
            t.model,
            {
                "type": "string",
                "enum": list(MODELS),
                "section": MODEL,
                "title": "Model",
                "description": "ranking_mlp: deep ranking network (embeddings + profile features -> Dense 64-32-1); popularity: the baseline itself; ease: closed-form item-item model (Steck 2019); neumf: GMF + MLP (He et al. 2017); sasrec: causal Transformer over each user's item sequence (Kang & McAuley 2018), sasrec_sqn: the same plus an SQN Q-learning head (Xin et al. 2020), both with sasrec_* settings; multvae: variational autoencoder over each user's item row (Liang et al. 2018), with multvae_* settings; blend: item EASE + user-side EASE + Mult-VAE, standardised and weighted (blend_* settings; the best on MovieLens-100K's MS protocol); other kinds are described in the model zoo.",
            },
        ),
        "epochs": (
            t.epochs,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 500,
                "section": MODEL,
                "title": "Epochs",
                "description": "Passes over the training interactions (negatives are re-sampled each epoch).",
            },
        ),
        "batch_size": (
            t.batch_size,
            {
                "type": "integer",
                "minimum": 16,
                "maximum": 65536,
                "section": MODEL,
                "title": "Batch size",
                "description": "Examples per gradient step.",
            },
        ),
        "embedding_dim": (
            t.embedding_dim,
            {
                "type": "integer",
                "minimum": 2,
                "maximum": 512,
                "section": MODEL,
                "title": "Embedding size",
                "description": "Dimension of the user and item embeddings.",
            },
        ),
        "learning_rate": (
            t.learning_rate,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": MODEL,
                "title": "Learning rate",
                "description": "Adam learning rate.",
            },
        ),
        "negatives": (
            t.negatives_per_positive,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "section": MODEL,
                "title": "Negatives per positive",
                "description": "Sampled unseen items per observed interaction.",
            },
        ),
        "seed": (
            t.seed,
            {
                "type": "integer",
                "minimum": 0,
                "section": MODEL,
                "title": "Training seed",
                "description": "Seed for initialisation and negative sampling.",
            },
        ),
        "ease_lambda": (
            t.ease_lambda,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "section": MODEL,
                "title": "EASE lambda",
                "description": "model=ease only: L2 weight of the closed-form item-item model; larger is smoother (tuned on MovieLens-100K).",
            },
        ),
        "sasrec_epochs": (
            t.sasrec_epochs,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "section": MODEL,
                "title": "SASRec epochs",
                "description": "model=sasrec/sasrec_sqn: passes over all users' training sequences (cut into windows of the maximum length).",
            },
        ),
        "sasrec_batch_size": (
            t.sasrec_batch_size,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "section": MODEL,
                "title": "SASRec batch size",
                "description": "model=sasrec/sasrec_sqn: sequence windows per gradient step.",
            },
        ),
        "sasrec_learning_rate": (
            t.sasrec_learning_rate,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": MODEL,
                "title": "SASRec learning rate",
                "description": "model=sasrec/sasrec_sqn: Adam learning rate (beta_2 0.98).",
            },
        ),
        "sasrec_max_len": (
            t.sasrec_max_len,
            {
                "type": "integer",
                "minimum": 2,
                "maximum": 1000,
                "section": MODEL,
                "title": "SASRec maximum sequence length",
                "description": "model=sasrec/sasrec_sqn: most recent items the Transformer reads (e.g. 50 or 200); longer histories are cut into several training windows.",
            },
        ),
        "sasrec_dim": (
            t.sasrec_dim,
            {
                "type": "integer",
                "minimum": 2,
                "maximum": 1024,
                "section": MODEL,
                "title": "SASRec hidden size",
                "description": "model=sasrec/sasrec_sqn: item/position embedding and Transformer width (a multiple of the heads).",
            },
        ),
        "sasrec_blocks": (
            t.sasrec_blocks,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 12,
                "section": MODEL,
                "title": "SASRec blocks",
                "description": "model=sasrec/sasrec_sqn: stacked causal self-attention blocks.",
            },
        ),
        "sasrec_heads": (
            t.sasrec_heads,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 16,
                "section": MODEL,
                "title": "SASRec attention heads",
                "description": "model=sasrec/sasrec_sqn: heads per attention layer; must divide the hidden size.",
            },
        ),
        "sasrec_dropout": (
            t.sasrec_dropout,
            {
                "type": "number",
                "minimum": 0,
                "exclusiveMaximum": 1,
                "section": MODEL,
                "title": "SASRec dropout",
                "description": "model=sasrec/sasrec_sqn: dropout on embeddings, attention and feed-forward layers.",
            },
        ),
        "sasrec_negatives": (
            t.sasrec_negatives,
            {
                "type": "integer",
                "minimum": 0,
                "maximum": 100000,
                "section": MODEL,
                "title": "SASRec sampled negatives",
                "description": "model=sasrec/sasrec_sqn: 0 = full softmax over the catalogue; > 0 = sampled softmax with this many uniform negatives (for large catalogues).",
            },
        ),
        "sasrec_full_softmax_max_items": (
            t.sasrec_full_softmax_max_items,
            {
                "type": "integer",
                "minimum": 1,
                "section": MODEL,
                "title": "SASRec full-softmax catalogue limit",
                "description": "model=sasrec/sasrec_sqn with sasrec_negatives = 0: catalogues larger than this train with sampled softmax (the full softmax updates every item at every step).",
            },
        ),
        "sasrec_large_catalogue_negatives": (
            t.sasrec_large_catalogue_negatives,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "section": MODEL,
                "title": "SASRec negatives above the limit",
                "description": "Sampled negatives per position when the catalogue exceeds the full-softmax limit.",
            },
        ),
        "sqn_gamma": (
            t.sqn_gamma,
            {
                "type": "number",
                "minimum": 0,
                "exclusiveMaximum": 1,
                "section": MODEL,
                "title": "SQN discount",
                "description": "model=sasrec_sqn: gamma of the Bellman target r + gamma * max Q'(s', a').",
            },
        ),
        "sqn_negative_reward": (
            t.sqn_negative_reward,
            {
                "type": "number",
                "minimum": -1,
                "maximum": 1,
                "section": MODEL,
                "title": "SQN reward below rating 4",
                "description": "model=sasrec_sqn: reward of an event rated below 4 (rated >= 4: 1; implicit data: every event 1).",
            },
        ),
        "sqn_target_every": (
            t.sqn_target_every,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "section": MODEL,
                "title": "SQN target update period",
                "description": "model=sasrec_sqn: training steps between updates of the target network.",
            },
        ),
        "sqn_tau": (
            t.sqn_tau,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": MODEL,
                "title": "SQN target update rate",
                "description": "model=sasrec_sqn: 1 = copy the online network at each update; < 1 = Polyak averaging.",
            },
        ),
        "sqn_q_weight": (
            t.sqn_q_weight,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "section": MODEL,
                "title": "SQN Q-loss weight",
                "description": "model=sasrec_sqn: weight of the Q-learning loss next to the cross-entropy.",
            },
        ),
        "sqn_negatives": (
            t.sqn_negatives,
            {
                "type": "integer",
                "minimum": 0,
                "maximum": 1000,
                "section": MODEL,
                "title": "SQN negative actions",
                "description": "model=sasrec_sqn: random unlogged items per state trained toward reward 0 with the state unchanged (SNQN); 0 = SQN as published. Needed to serve the Q head.",
            },
        ),
        "sqn_serve_head": (
            t.sqn_serve_head,
            {
                "type": "string",
                "enum": ["supervised", "q"],
                "section": MODEL,
                "title": "SQN served head",
                "description": "model=sasrec_sqn: which head the exported model ranks with (the paper serves the supervised one).",
            },
        ),
        "multvae_epochs": (
            t.multvae_epochs,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 5000,
                "section": MODEL,
                "title": "Mult-VAE epochs",
                "description": "model=multvae: passes over all users' training rows.",
            },
        ),
        "multvae_batch_size": (
            t.multvae_batch_size,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "section": MODEL,
                "title": "Mult-VAE batch size",
                "description": "model=multvae: users per gradient step (the paper uses 500).",
            },
        ),
        "multvae_learning_rate": (
            t.multvae_learning_rate,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": MODEL,
                "title": "Mult-VAE learning rate",
                "description": "model=multvae: Adam learning rate.",
            },
        ),
        "multvae_hidden": (
            t.multvae_hidden,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 8192,
                "section": MODEL,
                "title": "Mult-VAE hidden size",
                "description": "model=multvae: tanh layer of the encoder and of the decoder (the paper uses 600).",
            },
        ),
        "multvae_latent": (
            t.multvae_latent,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "section": MODEL,
                "title": "Mult-VAE latent size",
                "description": "model=multvae: dimension of the Gaussian latent code (the paper uses 200).",
            },
        ),
        "multvae_dropout": (
            t.multvae_dropout,
            {
                "type": "number",
                "minimum": 0,
                "exclusiveMaximum": 1,
                "section": MODEL,
                "title": "Mult-VAE input dropout",
                "description": "model=multvae: share of each user's normalised row dropped during training.",
            },
        ),
        "multvae_beta_max": (
            t.multvae_beta_max,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                "section": MODEL,
                "title": "Mult-VAE KL cap (beta max)",
                "description": "model=multvae or blend: final weight of the KL term; the paper's 0.2 overfit MovieLens-100K, 1.0 was chosen on an inner split.",
            },
        ),
        "multvae_anneal_epochs": (
            t.multvae_anneal_epochs,
            {
                "type": "integer",
                "minimum": 0,
                "maximum": 5000,
                "section": MODEL,
                "title": "Mult-VAE annealing epochs",
                "description": "model=multvae: epochs over which the KL weight rises linearly from 0 to the cap; 0 starts at the cap.",
            },
        ),
        "multvae_members": (
            t.multvae_members,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 32,
                "section": MODEL,
                "title": "Mult-VAE ensemble members",
                "description": "model=multvae or blend: networks trained side by side (own initialisation and noise); served scores are the mean of their standardised scores.",
            },
        ),
        "blend_item_weight": (
            t.blend_item_weight,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "section": MODEL,
                "title": "Blend: item EASE weight",
                "description": "model=blend: weight of item EASE's standardised scores; 0 leaves it out.",
            },
        ),
        "blend_user_weight": (
            t.blend_user_weight,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "section": MODEL,
                "title": "Blend: user-side EASE weight",
                "description": "model=blend: weight of user-side EASE's standardised scores (it inverts a users x users matrix: 0 for very large user bases).",
            },
        ),
        "blend_vae_weight": (
            t.blend_vae_weight,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "section": MODEL,
                "title": "Blend: Mult-VAE weight",
                "description": "model=blend: weight of the Mult-VAE ensemble's scores; 0 leaves it out.",
            },
        ),
        "blend_item_lambda": (
            t.blend_item_lambda,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "section": MODEL,
                "title": "Blend: item EASE lambda",
                "description": "model=blend: L2 weight of the item-item model inside the blend.",
            },
        ),
        "blend_user_lambda": (
            t.blend_user_lambda,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "section": MODEL,
                "title": "Blend: user-side EASE lambda",
                "description": "model=blend: L2 weight of the user-user model inside the blend.",
            },
        ),
        "dp_enabled": (
            t.dp_enabled,
            {
                "type": "boolean",
                "section": MODEL,
                "title": "Differential privacy (DP-SGD)",
                "description": "model=ranking_mlp only: train with DP-SGD (per-example gradient clipping plus Gaussian noise, Poisson-sampled batches); the privacy budget epsilon is logged as train.dp_epsilon. It covers one training row (not a whole user) and the trained weights only: the frozen profile tables (genre preferences, activity, popularity) are not privatised.",
            },
        ),
        "dp_l2_clip": (
            t.dp_l2_clip,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1000,
                "section": MODEL,
                "title": "DP clipping norm",
                "description": "dp_enabled only: each example's gradient is scaled down to at most this L2 norm.",
            },
        ),
        "dp_noise_multiplier": (
            t.dp_noise_multiplier,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100,
                "section": MODEL,
                "title": "DP noise multiplier",
                "description": "dp_enabled only: Gaussian noise std as a multiple of the clipping norm; larger gives a smaller epsilon and a less accurate model.",
            },
        ),
        "dp_delta": (
            t.dp_delta,
            {
                "type": ["null", "number"],
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 1,
                "section": MODEL,
                "title": "DP delta",
                "description": "dp_enabled only: delta at which epsilon is reported. Empty: 1 / training rows per epoch.",
            },
        ),
        "two_stage_candidates": (
            t.two_stage_candidates,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000000,
                "section": MODEL,
                "title": "Two-stage: candidates N",
                "description": "model=two_stage: items the retrieval towers pick per request (dot product + top_k over the whole catalogue); the ranking MLP scores only these.",
            },
        ),
        "two_stage_tower_dim": (
            t.two_stage_tower_dim,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1024,
                "section": MODEL,
                "title": "Two-stage: tower width",
                "description": "model=two_stage: width of the user and item tower vectors.",
            },
        ),
        "two_stage_tower_epochs": (
            t.two_stage_tower_epochs,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "section": MODEL,
                "title": "Two-stage: tower epochs",
                "description": "model=two_stage: passes over the distinct training pairs for the towers (the MLP uses epochs).",
            },
        ),
        "two_stage_tower_batch_size": (
            t.two_stage_tower_batch_size,
            {
                "type": "integer",
                "minimum": 2,
                "maximum": 65536,
                "section": MODEL,
                "title": "Two-stage: tower batch size",
                "description": "model=two_stage: pairs per step; the other pairs of a batch are each positive's negatives (in-batch softmax).",
            },
        ),
        "two_stage_tower_learning_rate": (
            t.two_stage_tower_learning_rate,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": MODEL,
                "title": "Two-stage: tower learning rate",
                "description": "model=two_stage: Adam step size of the towers (rows of the batch only).",
            },
        ),
        "two_stage_tower_temperature": (
            t.two_stage_tower_temperature,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10,
                "section": MODEL,
                "title": "Two-stage: softmax temperature",
                "description": "model=two_stage: the towers' cosine similarities are divided by this in the in-batch softmax.",
            },
        ),
        "k": (
            d.eval_k,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100,
                "section": GATE,
                "title": "K (cut-off)",
                "description": "Metrics are computed on the top K of a full ranking (HR@K, NDCG@K, MRR@K, coverage@K).",
            },
        ),
        "eval_user_sample": (
            d.eval_user_sample,
            {
                "type": "integer",
                "minimum": 0,
                "section": GATE,
                "title": "Evaluation user sample",
                "description": "0 = evaluate every user; N = a fixed random sample of N users (the same for candidate and champion); metrics then carry the interval the sampling implies.",
            },
        ),
        "steps_per_execution": (
            t.steps_per_execution,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1024,
                "section": MODEL,
                "title": "Steps per execution",
                "description": "model=ranking_mlp/neumf: batches run per call of the compiled train step (same updates, less per-step overhead).",
            },
        ),
        "progress_seconds": (
            t.progress_seconds,
            {
                "type": "number",
                "minimum": 0,
                "section": MODEL,
                "title": "Progress interval (s)",
                "description": "Seconds between progress lines (examples/s, ETA) in the task log during training, evaluation and large fits; 0 = off.",
            },
        ),
        "gate_metric": (
            g.metric,
            {
                "type": "string",
                "enum": ["ndcg", "hr", "mrr"],
                "section": GATE,
                "title": "Gate metric",
                "description": "Metric compared with popularity and the champion.",
            },
        ),
        "floor_ndcg": (
            g.floors["ndcg"],
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "NDCG@K floor",
                "description": "Absolute minimum validation NDCG@K.",
            },
        ),
        "floor_hr": (
            g.floors["hr"],
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "HR@K floor",
                "description": "Absolute minimum validation HR@K.",
            },
        ),
        "min_lift_over_popularity": (
            g.min_lift_over_popularity,
            {
                "type": "number",
                "minimum": 0,
                "section": GATE,
                "title": "Lift over popularity",
                "description": "The candidate must beat popularity by this relative margin (0.1 = 10%).",
            },
        ),
        "gate_rule": (
            g.rule,
            {
                "type": "string",
                "enum": list(GATE_RULES),
                "section": GATE,
                "title": "Champion rule",
                "description": "non-inferiority: no worse than the champion minus the tolerance (lets a model retrained on fresher data replace an equal one); superiority: strictly better by the minimum improvement.",
            },
        ),
        "tolerance": (
            g.tolerance,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "Non-inferiority tolerance",
                "description": "Absolute amount the gate metric may fall below the champion's.",
            },
        ),
        "min_improvement": (
            g.min_improvement,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "Superiority margin",
                "description": "Absolute improvement over the champion required by the superiority rule.",
            },
        ),
        **_drift_spec(d),
        "slice_floors": (
            {},
            {
                "type": "object",
                "section": GATE,
                "title": "Slice floors",
                "description": 'Slice name -> floor on the gate metric for that slice, e.g. {"activity:cold": 0.02, "popularity:tail": 0.01, "genre:Drama": 0.03}. Slices: activity:cold|medium|heavy (terciles of training events), popularity:head|tail (top 20% items), genre:<name>.',
            },
        ),
        "bootstrap_samples": (
            g.bootstrap_samples,
            {
                "type": "integer",
                "minimum": 100,
                "maximum": 100000,
                "section": GATE,
                "title": "Bootstrap resamples",
                "description": "Resamples of users for the paired bootstrap interval of candidate - champion NDCG.",
            },
        ),
        "confidence": (
            g.confidence,
            {
                "type": "number",
                "exclusiveMinimum": 0.5,
                "exclusiveMaximum": 1,
                "section": GATE,
                "title": "Bootstrap confidence",
                "description": "Confidence level of the paired interval the champion rule is decided on (0.95 = 95%).",
            },
        ),
        "catalogue_min_overlap": (
            g.catalogue_min_overlap,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "Catalogue overlap minimum",
                "description": "The candidate must know at least this share of the champion's items (by id) for the champion comparison to mean something (0.9 = 90%); below it the gate declines.",
            },
        ),
        "allow_catalogue_change": (
            g.allow_catalogue_change,
            {
                "type": "boolean",
                "section": GATE,
                "title": "Allow a catalogue change",
                "description": "Replace a champion that knows other items (a new data source or catalogue): the gate compares the two on the shared items only and records that the change was allowed.",
            },
        ),
        "min_retrieval_recall": (
            g.min_retrieval_recall,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "section": GATE,
                "title": "Two-stage: retrieval recall floor",
                "description": "model=two_stage: the retrieval stage's validation recall@N must reach this and the recall@N of the N most popular unseen items.",
            },
        ),
        "tracking_uri": (
            None,
            {
                **opt_str,
                "section": SERVING,
                "title": "MLflow tracking URI",
                "description": "Empty: a SQLite store under the work folder.",
            },
        ),
        "registered_model_name": (
            d.registry.model_name,
            {
                "type": "string",
                "minLength": 1,
                "section": SERVING,
                "title": "Registered model",
                "description": "MLflow registered model name.",
            },
        ),
        "serving_model_name": (
            d.serving.model_name,
            {
                "type": "string",
                "minLength": 1,
                "section": SERVING,
                "title": "Serving model name",
                "description": "Model name in TF Serving's model config.",
            },
        ),
        **server_spec(d.serving, SERVING),
        "top_k": (
            d.serving.top_k,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "section": SERVING,
                "title": "Served top K",
                "description": "How many items the serving signature returns per user (>= K).",
            },
        ),
        "reload_timeout": (
            d.serving.reload_timeout_seconds,
            {
                "type": "number",
                "minimum": 1,
                "maximum": 3600,
                "section": SERVING,
                "title": "Reload deadline (s)",
                "description": "Deadline of the model server's reload call that loads a version (TF Serving answers it once a new model is AVAILABLE; on a cold GPU that includes CUDA start-up and warmup). Other calls keep the ordinary timeout.",
            },
        ),
        "answer_rtol": (
            d.serving.answer_rtol,
            {
                "type": "number",
                "minimum": 0,
                "maximum": 0.1,
                "section": SERVING,
                "title": "Served-answer tolerance",
                "description": "Canary check and infra validation: served scores may differ from the exported model's by this share of the row's largest score, and items this close may swap (5e-3 covers a GPU computing in TF32).",
            },
        ),
        "infra_load_timeout": (
            d.serving.infra_load_timeout_seconds,
            {
                "type": "number",
                "minimum": 1,
                "maximum": 3600,
                "section": SERVING,
                "title": "Infra validation load timeout (s)",
                "description": "How long the sandboxed model server may take to load the candidate (AVAILABLE) before infra validation fails.",
            },
        ),
        "infra_attempts": (
            d.serving.infra_attempts,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 5,
                "section": SERVING,
                "title": "Infra validation attempts",
                "description": "Sandbox start-ups tried when the infrastructure fails (port, start-up); a model that fails to load or answers wrongly is refused at once.",
            },
        ),
        # null, not "": the Airflow form treats an empty required string as missing and
        # disables its Trigger button (found by tests/integration/test_browser_ui.py).
        "infra_server": (
            d.serving.infra_server or None,
            {
                "type": ["null", "string"],
                "enum": [None, "tensorflow_model_server", "recflow-model-server"],
                "section": SERVING,
                "title": "Infra validation server",
                "description": "Model server for the sandbox: empty picks tensorflow_model_server when it is on PATH, else recflow-model-server.",
            },
        ),
        **work_dir_spec(SERVING),
    }


def server_spec(serving: Any, section: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Form entries both DAGs share: where versions are written and which server loads them."""
    opt_str = {"type": ["null", "string"]}
    return {
        "model_base_path": (
            None,
            {
                **opt_str,
                "section": section,
                "title": "Model base path",
                "description": "Folder that holds <model name>/<version>/ for TF Serving. Empty: under the work folder.",
            },
        ),
        "model_config_file": (
            None,
            {
                **opt_str,
                "section": section,
                "title": "Model config file",
                "description": "TF Serving --model_config_file path. Empty: under the work folder.",
            },
        ),
        "serving_host": (
            serving.host,
            {
                "type": "string",
                "section": section,
                "title": "Model server host",
                "description": "gRPC host of TF Serving or the local model server.",
            },
        ),
        "serving_port": (
            serving.grpc_port,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "section": section,
                "title": "Model server gRPC port",
                "description": "gRPC port (TF Serving's default is 8500).",
            },
        ),
    }


def work_dir_spec(section: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    opt_str = {"type": ["null", "string"]}
    return {
        "work_dir": (
            None,
            {
                **opt_str,
                "section": section,
                "title": "Work folder",
                "description": "Where run data, the MLflow store and models live. Empty: $RECFLOW_HOME or ./var.",
            },
        ),
    }


def _drift_spec(d: PipelineConfig) -> dict[str, tuple[Any, dict[str, Any]]]:
    x = d.drift
    share = {"type": "number", "minimum": 0, "maximum": 1, "section": DRIFT}
    return {
        "drift_max_item_popularity_jsd": (
            x.max_item_popularity_jsd,
            {
                **share,
                "title": "Item popularity drift limit (JSD)",
                "description": "Largest Jensen-Shannon divergence (log2, 0..1) between the batch's item popularity and the champion's training data.",
            },
        ),
        "drift_max_user_activity_jsd": (
            x.max_user_activity_jsd,
            {
                **share,
                "title": "User activity drift limit (JSD)",
                "description": "Largest JSD between the events-per-user histograms of the batch and the champion's training data.",
            },
        ),
        "drift_max_rating_linf": (
            x.max_rating_linf,
            {
                **share,
                "title": "Rating drift limit (L-inf)",
                "description": "Largest change of any rating value's share (L-infinity distance).",
            },
        ),
        "drift_max_unseen_users": (
            x.max_unseen_users,
            {
                **share,
                "title": "Unseen users limit",
                "description": "Largest share of the batch's users the champion was not trained on.",
            },
        ),
        "drift_max_unseen_items": (
            x.max_unseen_items,
            {
                **share,
                "title": "Unseen items limit",
                "description": "Largest share of the batch's items the champion was not trained on.",
            },
        ),
        "skew_max_unknown_users": (
            x.max_serving_unknown_users,
            {
                **share,
                "title": "Serving skew: unknown users limit",
                "description": "Largest share of served requests (serving logs) for users the champion was not trained on.",
            },
        ),
        "skew_max_user_jsd": (
            x.max_serving_user_jsd,
            {
                **share,
                "title": "Serving skew: requested users limit (JSD)",
                "description": "Largest JSD between users requested in serving logs and the champion's training users.",
            },
        ),
        "accept_drift": (
            x.accept_drift,
            {
                "type": "boolean",
                "section": DRIFT,
                "title": "Accept drift (release quarantine)",
                "description": "Report the drift checks but do not stop the run: re-run a quarantined batch with this on to train on it.",
            },
        ),
        "serving_log_dir": (
            None,
            {
                "type": ["null", "string"],
                "section": DRIFT,
                "title": "Serving logs folder",
                "description": "JSON-lines request logs for the skew checks. Empty: <work folder>/serving/requests.",
            },
        ),
    }


def training_params() -> dict[str, Any]:
    """Airflow Params for the trigger form, grouped by section."""
    from airflow.sdk import Param

    return {name: Param(default, **schema) for name, (default, schema) in _spec().items()}


# The rollback DAG only needs where the registry and the model server are.
_ROLLBACK_KEYS = (
    "tracking_uri",
    "registered_model_name",
    "serving_model_name",
    "model_base_path",
    "model_config_file",
    "serving_host",
    "serving_port",
    "work_dir",
)
ROLLBACK = "Rollback"


def rollback_params() -> dict[str, Any]:
    """Airflow Params of ``recsys_rollback``: target version, reason, registry and serving."""
    from airflow.sdk import Param

    spec = _spec()
    params = {
        "target_version": Param(None, type=["null", "integer"], minimum=1, section=ROLLBACK,
            title="Target version", description="Registered model version to serve again. Empty: the version with MLflow alias 'previous' (the champion before the last promotion)."),
        "reason": Param("", type="string", section=ROLLBACK, title="Reason",
            description="Why the rollback happens (incident, metric, ticket); recorded on the rolled-back version and the MLflow run."),
    }  # fmt: skip
    for name in _ROLLBACK_KEYS:
        default, schema = spec[name]
        params[name] = Param(default, **schema)
    return params
