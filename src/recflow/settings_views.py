"""Views derived from the settings' declarations: the Airflow trigger form's ``Param`` schemas
(:func:`form_schemas`), the MLflow params of a run (:func:`mlflow_params`) and the docs table
(:func:`markdown_table`). Light, like :mod:`recflow.settings`: imported while Airflow parses DAGs.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recflow.jsontypes import JSONObject, JSONScalar
from recflow.settings import Setting, Settings, get_value, walk

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}


def _json_type(tp: Any) -> tuple[str, bool]:
    args = typing.get_args(tp)
    nullable = bool(args) and type(None) in args
    if nullable:
        (tp,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "array", nullable
    if origin is not None and issubclass(origin, Mapping):
        return "object", nullable
    return _JSON_TYPES[tp], nullable


def form_schemas(
    cfg: Settings, names: tuple[str, ...] | None = None
) -> dict[str, tuple[object, JSONObject]]:
    """``{name: (default, JSON schema)}`` of the trigger form, from a default config ``cfg``."""
    out: dict[str, tuple[object, JSONObject]] = {}
    params = walk(type(cfg))
    if names is not None:  # in the order given
        by_name = {p.name: p for p in params}
        params = tuple(by_name[name] for name in names)
    for p in params:
        s = p.setting
        jtype, nullable = _json_type(p.type)
        nullable = nullable or s.null_default or p.type is Path
        default = None if s.null_default or p.type is Path else get_value(cfg, p)
        if isinstance(default, tuple):
            default = list(default)
        elif isinstance(default, Mapping):
            default = dict(default)
        schema: JSONObject = {"type": ["null", jtype] if nullable else jtype}
        if jtype == "array":
            schema["items"] = {"type": "string"}
        allowed = s.allowed()
        if allowed is not None:
            enum: list[JSONScalar] = [None] if nullable else []
            schema["enum"] = enum + list(allowed)
        # Strict bounds (gt/lt) go to the form as minimum/maximum: Airflow 3.3.2's trigger
        # dialog would not submit a form with exclusiveMinimum/exclusiveMaximum (found by
        # tests/integration/test_browser_ui.py). The strict bound is still enforced when the
        # run's conf is parsed (value_problems), so a boundary value fails there, by name.
        for key, bound in (
            ("minimum", s.ge if s.ge is not None else s.gt),
            ("maximum", s.le if s.le is not None else s.lt),
            ("minLength", s.min_length),
        ):
            if bound is not None:
                schema[key] = bound
        schema.update(section=p.section, title=s.title, description=s.help)
        out[p.name] = (default, schema)
    return out


def mlflow_params(cfg: Settings) -> dict[str, object]:
    """Every setting (DAG param or not) keyed by its dotted config path, JSON-friendly."""
    out: dict[str, object] = {}
    for p in walk(type(cfg), params_only=False):
        if p.key is not None:
            continue
        value = get_value(cfg, p)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[".".join(p.path)] = value
    return out


def _bounds_text(s: Setting) -> str:
    allowed = s.allowed()
    if allowed is not None:
        return ", ".join(f"`{a}`" for a in allowed)
    parts = [
        f"{word} {bound:g}"
        for word, bound in (("≥", s.ge), (">", s.gt), ("≤", s.le), ("<", s.lt))
        if bound is not None
    ]
    if s.min_length:
        parts.append(f"length ≥ {s.min_length}")
    return ", ".join(parts)


def markdown_table(cfg: Settings, heading: str) -> str:
    """A Markdown table of a config's settings (DAG params first, then config-only ones)."""
    lines = [
        f"## {heading}",
        "",
        "| DAG param | config path | type | default | bounds / choices | form section | help |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in walk(type(cfg), params_only=False):
        default = get_value(cfg, p)
        if p.setting.null_default or isinstance(default, Path):
            default = "(derived)"
        path = ".".join(p.path) + (f"[{p.key!r}]" if p.key else "")
        jtype, nullable = _json_type(p.type)
        name = f"`{p.name}`" if p.is_param else "(code/env only)"
        cells = [
            name,
            f"`{path}`",
            jtype + (" or null" if nullable else ""),
            f"`{default!r}`".replace("|", "\\|"),
            _bounds_text(p.setting),
            p.section if p.is_param else "",
            f"**{p.setting.title}.** {p.setting.help}".replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
