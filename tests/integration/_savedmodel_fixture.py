"""Tiny SavedModels meeting ``recflow.contract``'s serving signature, for the serving tests.

``serving_default(user_id: string [None]) -> item_ids/scores/titles [B, K]`` is a lookup into a
constant table: known users get their row, anyone else the last ("popular") row. Titles carry
a tag so a test can tell which model answered.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

USERS = ("u1", "u2")
ITEMS = ("i1", "i2", "i3", "i4")
K = 3
# rows: u1, u2, unknown users
RANKING = ((0, 1, 2), (3, 2, 1), (1, 0, 3))


def titles_for(tag: str) -> list[str]:
    return [f"{tag} Movie {item}" for item in ITEMS]


def expected(tag: str, user: str) -> list[tuple[str, str]]:
    """(item_id, title) in rank order, as served for ``user``."""
    row = RANKING[USERS.index(user)] if user in USERS else RANKING[-1]
    return [(ITEMS[j], titles_for(tag)[j]) for j in row]


def write_savedmodel(path: Path, tag: str, *, warmup_users: tuple[str, ...] = ()) -> Path:
    """Write the model at ``path`` (which must not exist); optional warmup requests."""
    import tensorflow as tf

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(USERS), tf.range(len(USERS), dtype=tf.int64)
                ),
                default_value=len(USERS),
            )
            self.ranking = tf.constant(RANKING, dtype=tf.int64)
            self.item_ids = tf.constant(ITEMS)
            self.titles = tf.constant(titles_for(tag))
            self.scores = tf.constant([[1.0 - 0.25 * r for r in range(K)]] * len(RANKING))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            rows = self.table.lookup(user_id)
            idx = tf.gather(self.ranking, rows)
            return {
                "item_ids": tf.gather(self.item_ids, idx),
                "scores": tf.gather(self.scores, rows),
                "titles": tf.gather(self.titles, idx),
            }

    module = Lookup()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve.get_concrete_function()}
    )
    if warmup_users:
        _write_warmup(path, warmup_users)
    return path


def _write_warmup(path: Path, users: tuple[str, ...]) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    folder = path / "assets.extra"
    folder.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "tf_serving_warmup_requests")) as writer:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "warmup"
        request.model_spec.signature_name = "serving_default"
        request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(list(users), dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        writer.write(log.SerializeToString())


def publish_version(source: Path, base: Path, version: int) -> Path:
    """Copy ``source`` to ``base/<version>`` in one rename, as the pusher does."""
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    shutil.copytree(source, scratch, dirs_exist_ok=True)
    final = base / str(version)
    os.rename(scratch, final)
    return final
