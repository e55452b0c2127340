"""JSON-shaped values: what stages return to XCom and what run records and reports hold.

``JSONValue`` is what ``json.dumps`` writes without a ``default``: the producer's side is
checked (a NumPy integer or a ``Path`` inside a stage result is a type error here, where it
would otherwise fail in Airflow's XCom serialiser). Reading JSON back (``RunContext.read_json``,
a registry's tags) stays ``Any``: that is the boundary where shapes are only known by contract.
Light module: no imports beyond the standard library, so DAG files may import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JSONScalar: TypeAlias = str | int | float | bool | None
JSONValue: TypeAlias = JSONScalar | Mapping[str, "JSONValue"] | Sequence["JSONValue"]
JSONObject: TypeAlias = dict[str, JSONValue]

__all__ = ["JSONObject", "JSONScalar", "JSONValue"]
