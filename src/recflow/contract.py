"""The serving contract every exported model meets (written down once, here).

A model directory is a TensorFlow SavedModel that loads with only ``tensorflow`` imported
(no Keras custom objects, no recflow code) and exposes:

Signature ``serving_default`` (what TF Serving and the client call):
    inputs   user_id   DT_STRING [-1]        pseudonymous or raw user ids, one per row
    outputs  item_ids  DT_STRING [-1, K]     top-K item ids, best first
             scores    DT_FLOAT  [-1, K]     their scores (higher is better), descending
             titles    DT_STRING [-1, K]     their titles, for display
             reasons   DT_STRING [-1, K]     (since 1.1) why each item is recommended, for
                                             display: "because you watched <title>" (an item
                                             of the user's own training history), "popular
                                             with all users" (cold start), "" for padding
    Items the user interacted with in the training data are excluded. Unknown users get the
    most popular items (cold start), never an error. K is fixed at export (``top_k``).
    A known user with fewer than K unseen items gets the remaining slots padded with
    item_id "", title "" and score -inf (the shape stays fixed; a seen item is never returned).

Restored attributes for offline evaluation (``m = tf.saved_model.load(path)``):
    m.score_all(user_id: DT_STRING [B]) -> DT_FLOAT [B, N]   raw scores over the catalogue,
        nothing excluded (the evaluator masks per split)
    m.catalogue_item_ids : string tensor/variable [N]        catalogue order of score_all
    m.contract_version   : string tensor/variable []         CONTRACT_VERSION at export

Warmup: ``assets.extra/tf_serving_warmup_requests``, a TFRecord of PredictionLog with at most
MAX_WARMUP_RECORDS Predict requests against ``serving_default``.

Versioning: later models extend compatibly, by adding outputs or signatures, never by
renaming or retyping the ones above; such changes bump the minor version.
"""

from __future__ import annotations

CONTRACT_VERSION = "1.1"

SIGNATURE_NAME = "serving_default"
INPUT_USER_ID = "user_id"
OUTPUT_ITEM_IDS = "item_ids"
OUTPUT_SCORES = "scores"
OUTPUT_TITLES = "titles"
OUTPUT_REASONS = "reasons"

# (name, dtype name as in tf.DType.name, shape with -1 for unknown; K stands for top_k)
INPUTS: dict[str, tuple[str, tuple[int | str, ...]]] = {
    INPUT_USER_ID: ("string", (-1,)),
}
OUTPUTS: dict[str, tuple[str, tuple[int | str, ...]]] = {
    OUTPUT_ITEM_IDS: ("string", (-1, "K")),
    OUTPUT_SCORES: ("float32", (-1, "K")),
    OUTPUT_TITLES: ("string", (-1, "K")),
}

# Outputs added by a minor version: required from the model's own contract_version on, so
# models exported before (or by kinds not yet updated, writing "1.0") stay valid.
# name -> (dtype, shape, first contract version that requires it)
VERSIONED_OUTPUTS: dict[str, tuple[str, tuple[int | str, ...], str]] = {
    OUTPUT_REASONS: ("string", (-1, "K"), "1.1"),
}


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric parts of a version: "1.10" -> (1, 10), so versions compare as numbers."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def required_outputs(model_version: str) -> dict[str, tuple[str, tuple[int | str, ...]]]:
    """Every output a model claiming ``model_version`` must expose."""
    out = dict(OUTPUTS)
    for name, (dtype, shape, since) in VERSIONED_OUTPUTS.items():
        if version_tuple(model_version) >= version_tuple(since):
            out[name] = (dtype, shape)
    return out


SCORE_ALL_ATTR = "score_all"
CATALOGUE_ATTR = "catalogue_item_ids"
CONTRACT_VERSION_ATTR = "contract_version"

WARMUP_RELATIVE_PATH = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
