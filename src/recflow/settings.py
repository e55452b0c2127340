"""Each setting declared once; everything else derived from the declaration.

A config is a frozen dataclass whose fields are declared with :func:`setting` (a value) or
:func:`block` (a nested config). The declaration carries the type (the annotation), the
default, the bounds or choices, the trigger-form title, help text and section, and the flat
DAG-param name. From it come:

- the flat-name mapping and type coercion (:func:`parse`),
- the bound and choice checks, run whenever a config object is built (:class:`Settings`),
- the Airflow trigger-form ``Param`` schemas, the MLflow params and the docs table
  (:mod:`recflow.settings_views`).

Cross-field rules live in the config class beside the fields they relate (``rules``).
This module stays light: it is imported while Airflow parses DAG files.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Iterator, Mapping, Sized
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypedDict, TypeVar, Unpack, overload

from recflow.errors import ConfigError
from recflow.jsontypes import JSONScalar

Choices = tuple[JSONScalar, ...] | Callable[[], tuple[JSONScalar, ...]]
T = TypeVar("T")
S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Setting:
    """What one field declares besides its type and default."""

    title: str
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Choices | None = None
    min_length: int | None = None
    section: str | None = None  # trigger-form section; None: the config class's FORM_SECTION
    flat: str | None = None  # DAG-param name; None: the class's FLAT_PREFIX + the field name
    param: bool = True  # False: set by code or the environment, not a DAG param
    # The form shows null (meaning: the default, often "derive it") instead of the value;
    # an empty string then also means the default.
    null_default: bool = False
    entries: Mapping[str, Setting] | None = None  # mapping whose keys are DAG params too

    def allowed(self) -> tuple[JSONScalar, ...] | None:
        if self.choices is None:
            return None
        return self.choices() if callable(self.choices) else self.choices


class Declared(TypedDict, total=False):
    """The keywords of :func:`setting` and :func:`entry` beyond title and help."""

    ge: float | None
    gt: float | None
    le: float | None
    lt: float | None
    choices: Choices | None
    min_length: int | None
    section: str | None
    flat: str | None
    param: bool
    null_default: bool
    entries: Mapping[str, Setting] | None


@overload
def setting(
    default: T,
    title: str = "",
    help: str = "",
    **declared: Unpack[Declared],  # noqa: A002
) -> T: ...
@overload
def setting(
    *,
    title: str = "",
    help: str = "",
    factory: Callable[[], T],
    **declared: Unpack[Declared],  # noqa: A002
) -> T: ...
def setting(
    default: object = MISSING,
    title: str = "",
    help: str = "",  # noqa: A002 - the form's word for it
    *,
    factory: Callable[[], object] | None = None,
    **declared: Unpack[Declared],
) -> Any:  # a dataclasses.field(): typed as the default, as dataclasses.field is
    """A config field with its declaration (see :class:`Setting` for the keywords)."""
    meta = {"setting": Setting(title=title, help=help, **declared)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def entry(title: str, help: str, **declared: Unpack[Declared]) -> Setting:  # noqa: A002
    """One key of a mapping setting that is also a DAG param (e.g. ``floors['ndcg']``)."""
    return Setting(title=title, help=help, **declared)


def block(factory: Callable[[], T], *, hide: tuple[str, ...] = ()) -> T:
    """A nested config; ``hide``: flat names of it that are not params of this parent."""
    return field(default_factory=factory, metadata={"block": hide})


class Settings:
    """Base of every config dataclass: bounds and ``rules`` are checked on construction."""

    FORM_SECTION: ClassVar[str] = ""
    FLAT_PREFIX: ClassVar[str] = ""
    # Declared so that mypy sees every Settings as a dataclass (each subclass is one).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __post_init__(self) -> None:
        problems = [
            problem
            for f in dataclasses.fields(self)
            if "setting" in f.metadata
            for problem in value_problems(
                f.metadata["setting"], getattr(self, f.name), _label(type(self), f)
            )
        ]
        problems += self.rules()
        if problems:
            raise ConfigError(f"{type(self).__name__}: " + "; ".join(problems))

    def rules(self) -> list[str]:
        """Cross-field rules of this block: one message per broken rule."""
        return []


def _label(cls: type, f: dataclasses.Field[object]) -> str:
    s: Setting = f.metadata["setting"]
    if not s.param:
        return f.name
    return s.flat or f"{cls.FLAT_PREFIX}{f.name}"  # type: ignore[attr-defined]


def value_problems(s: Setting, value: object, name: str) -> list[str]:
    """Messages for a value outside its declared bounds or choices (empty when fine)."""
    if value is None:
        return []
    if s.entries is not None and isinstance(value, Mapping):
        return [
            p
            for key, sub in s.entries.items()
            if key in value
            for p in value_problems(sub, value[key], sub.flat or f"{name}[{key!r}]")
        ]
    allowed = s.allowed()
    if allowed is not None:
        if value in allowed or (s.null_default and value == ""):
            return []
        return [f"{name}: expected one of {list(allowed)}, found {value!r}"]
    out: list[str] = []
    if s.min_length is not None and isinstance(value, Sized) and len(value) < s.min_length:
        out.append(f"{name}: expected at least {s.min_length} characters, found {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for bound, ok, word in (
            (s.ge, lambda b: value >= b, ">="),
            (s.gt, lambda b: value > b, ">"),
            (s.le, lambda b: value <= b, "<="),
            (s.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                out.append(f"{name}: expected {word} {bound}, found {value}")
    return out


# ---------------------------------------------------------------------------------------------
# Walking the declarations


@dataclass(frozen=True)
class Param:
    """One flat DAG param: where it lives in the config and what it declares."""

    name: str
    path: tuple[str, ...]  # field names from the root config down to the field
    key: str | None  # the mapping key for an entry of a mapping setting
    setting: Setting
    type: Any  # an annotation from typing.get_type_hints: a class or a typing form
    section: str
    is_param: bool = True  # False: config-only here (code, environment, or hidden by the parent)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def walk(cls: type, *, params_only: bool = True) -> tuple[Param, ...]:
    """Every setting of ``cls`` and its blocks, in declaration order."""
    return tuple(_walk(cls, (), frozenset(), params_only))


def _walk(cls: type, path: tuple[str, ...], hidden: frozenset[str], only: bool) -> Iterator[Param]:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if "block" in f.metadata:
            yield from _walk(
                hints[f.name], (*path, f.name), hidden | set(f.metadata["block"]), only
            )
            continue
        s: Setting | None = f.metadata.get("setting")
        if s is None:
            continue
        section = s.section or cls.FORM_SECTION  # type: ignore[attr-defined]
        if s.entries is not None:
            value_type = typing.get_args(hints[f.name])[1]
            for key, sub in s.entries.items():
                name = sub.flat or key
                if name not in hidden:
                    yield Param(name, (*path, f.name), key, sub, value_type, sub.section or section)
        flat = _label(cls, f)
        is_param = s.param and flat not in hidden
        if only and not is_param:
            continue
        name = flat if is_param else ".".join((*path, f.name))
        yield Param(name, (*path, f.name), None, s, hints[f.name], section, is_param)


@cache
def param_map(cls: type) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for p in walk(cls):
        if p.name in out:
            raise ConfigError(f"{cls.__name__}: two settings declare the DAG param {p.name!r}")
        out[p.name] = p
    return out


def get_value(cfg: Settings, p: Param) -> object:
    obj: Any = cfg  # walks attributes named by the declarations
    for name in p.path:
        obj = getattr(obj, name)
    return obj[p.key] if p.key is not None and p.key in obj else (None if p.key else obj)


def flat_values(cfg: Settings) -> dict[str, object]:
    """``{DAG-param name: value}`` of a config (the inverse of :func:`parse`)."""
    return {p.name: get_value(cfg, p) for p in walk(type(cfg))}


# ---------------------------------------------------------------------------------------------
# Coercion and parsing


def coerce(value: Any, tp: Any, name: str) -> object:
    """``value`` (from a form, JSON conf or CLI string) as type ``tp``; ConfigError if it can't."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if args and type(None) in args:  # X | None
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    try:
        if tp is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
            raise TypeError
        if tp is Path:
            return Path(value).resolve()
        if origin is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise TypeError
            return tuple(str(v) for v in value)
        if origin is not None and issubclass(origin, Mapping):
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, Mapping):
                raise TypeError
            return {str(k): coerce(v, args[1], f"{name}[{k!r}]") for k, v in value.items()}
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {_type_word(tp)}, found {value!r}") from None
    return value


def _type_word(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list of strings (or a comma-separated string)"
    if origin is not None and issubclass(origin, Mapping):
        return "an object (mapping)"
    return f"a {getattr(tp, '__name__', tp)}"


def parse(cls: type[S], params: Mapping[str, object], base: S | None = None) -> S:
    """A config of class ``cls`` from flat DAG params over ``base`` (default: ``cls()``).

    Unknown names, values of the wrong type and values outside their bounds are all reported
    in one ConfigError (name, bound, value); cross-field rules run when the result is built.
    None or an empty string means "not given": the base value stays.
    """
    klass: type = cls
    known = param_map(klass)
    problems: list[str] = []
    unknown = sorted(set(params) - set(known))
    if unknown:
        problems.append(f"unknown params {unknown}; expected some of {sorted(known)}")
    changes: dict[tuple[str, ...], dict[str, object]] = {}
    for name, raw in params.items():
        p = known.get(name)
        if p is None or raw is None or (isinstance(raw, str) and raw == ""):
            continue
        try:
            value = coerce(raw, p.type, name)
        except ConfigError as err:
            problems.append(str(err))
            continue
        found = value_problems(p.setting, value, name)
        if found:
            problems.extend(found)
            continue
        fields = changes.setdefault(p.path[:-1], {})
        if p.key is None:
            fields[p.path[-1]] = value
        else:
            current = fields.get(p.path[-1])
            if current is None:
                current = get_value(base or cls(), dataclasses.replace(p, key=None))
            mapping = dict(current) if isinstance(current, Mapping) else {}
            fields[p.path[-1]] = {**mapping, p.key: value}
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return _apply(base if base is not None else cls(), (), changes)


def _apply(obj: S, path: tuple[str, ...], changes: dict[tuple[str, ...], dict[str, object]]) -> S:
    update = dict(changes.get(path, {}))
    for f in dataclasses.fields(obj):
        if "block" in f.metadata:
            inner = (*path, f.name)
            if any(p[: len(inner)] == inner for p in changes):
                update[f.name] = _apply(getattr(obj, f.name), inner, changes)
    return dataclasses.replace(obj, **update) if update else obj
