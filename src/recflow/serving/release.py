"""The TensorFlow Serving release production runs: the one place that names it.

Everything else reads or is checked against this module:

- ``.env.example`` (``TF_SERVING_VERSION``) and the ``${TF_SERVING_VERSION:-...}`` defaults in
  docker-compose.yml / docker-compose.cpu.yml (the ``tensorflow/serving`` image tags and the
  build argument of the Airflow image, which copies ``tensorflow_model_server`` from that image
  for infra validation), and the ``ARG TF_SERVING_VERSION`` default of docker/airflow/Dockerfile:
  tests/unit/test_docker_images.py checks they all equal ``TF_SERVING_VERSION``;
- ``make check-serving-compat`` (bench/serving_compat.py) loads every model kind's SavedModel
  under ``tensorflow-cpu==TF_SERVING_VERSION``, the TensorFlow runtime this release is built on
  (TF Serving X.Y.Z builds against TensorFlow X.Y), and compares every signature's answers with
  the exporting TensorFlow's.

2.20.0 is the newest release tagged in tensorflow/serving (tag ``2.20.0``, "Update version for
2.20.0 release", April 2026; no 2.21 tag or r2.21 branch): the SavedModels are exported by
TensorFlow 2.21, one minor release ahead, which is why the compatibility check exists.
"""

from __future__ import annotations

TF_SERVING_VERSION = "2.20.0"
# The Docker Hub repository of the official images: X.Y.Z (CPU) and X.Y.Z-gpu (CUDA).
TF_SERVING_IMAGE = "tensorflow/serving"


def tensorflow_runtime(serving_version: str = TF_SERVING_VERSION) -> str:
    """The ``tensorflow-cpu`` release whose runtime the serving release embeds (same X.Y.Z)."""
    return serving_version


def image(gpu: bool, serving_version: str = TF_SERVING_VERSION) -> str:
    return f"{TF_SERVING_IMAGE}:{serving_version}{'-gpu' if gpu else ''}"
