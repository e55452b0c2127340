"""Pipeline stages: one module per step of the training DAG.

Each stage is a function ``run(cfg, ctx, ...) -> dict`` that takes the ``PipelineConfig`` and
the ``RunContext``, does its work against the seams (registry, model server, file store) and
returns a small JSON-able dict for XCom. DAG files only wire these together.
"""

from recflow.pipeline.context import RunContext

__all__ = ["RunContext"]
