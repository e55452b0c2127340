"""``two_stage``: retrieval by user/item towers, then the ranking MLP on the candidates only.

fit   trains the seed's ranking network exactly as ``ranking_mlp`` does (same settings, same
      seed, so the same weights) and the two towers (:mod:`recflow.models.two_stage.towers`), then
      measures the retrieval stage's recall@N on the validation split: the share of validation
      users whose held-out item is among their N candidates (training items excluded, as
      served). The popularity retrieval's recall@N on the same users is measured beside it;
      both go to ``summary["metrics"]`` (MLflow ``train.*``) for the gate's retrieval check.
export one SavedModel in the serving contract. Per request: a [B, D] x [D, N_catalogue] matmul,
      training items masked, an exact top-k (:func:`top_k_blocked`) picks
      ``two_stage_candidates`` items, the MLP scores those B x C pairs, and the score module
      takes the top-K of them (``known_candidates``: nothing else touches [B, N]).

``score_all`` (offline evaluation) returns, for each known user, the MLP's probability (in
[0, 1]) for the candidates and ``tanh(retrieval score / 16) - 2`` (in (-3, -1)) for every other
item, so any ranking of the full catalogue puts the candidates first, in the MLP's order, then
the rest in retrieval order: exactly what serving returns. With N = the catalogue size the
model ranks like ``ranking_mlp`` (tests/unit/test_two_stage.py).


Modules: ``towers`` (the retrieval towers and their training), ``export`` (the serving
graph and the SavedModel), ``kind`` (the zoo's ``fit`` and ``export``).
"""
