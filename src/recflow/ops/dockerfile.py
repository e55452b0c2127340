"""Read a Dockerfile the way the builder does, far enough to check it without an engine.

Docker's rules (Dockerfile reference): a line ending in ``\\`` continues on the next one;
lines starting with ``#`` are comments, also inside a continued instruction, and are removed
before the instruction is parsed; instructions are case-insensitive; ``COPY``/``ADD`` take
``--flag=value`` options, then sources and a destination, in shell or JSON (exec) form;
``ARG`` before the first ``FROM`` may be used in ``FROM`` lines.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest, continuation lines joined


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    dest: str
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def stage(self) -> str | None:
        """``--from=<stage or image>``: the sources come from there, not from the context."""
        return self.flags.get("from")


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if not line:
            continue
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def parse_copy(args: str) -> Copy:
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        rest = rest.strip()
    parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    if len(parts) < 2:
        raise ValueError(f"COPY needs a source and a destination, found {args!r}")
    return Copy(tuple(parts[:-1]), parts[-1], flags)


def copies(text: str) -> list[Copy]:
    return [parse_copy(i.args) for i in instructions(text) if i.keyword in ("COPY", "ADD")]


def stages(text: str) -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM, in order."""
    out = []
    for i in instructions(text):
        if i.keyword == "FROM":
            found = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+[Aa][Ss]\s+(\S+))?", i.args)
            if not found:
                raise ValueError(f"unreadable FROM {i.args!r}")
            out.append((found.group(1), found.group(2)))
    return out


def global_args(text: str) -> dict[str, str | None]:
    """``ARG`` lines before the first ``FROM`` (usable in FROM), with their defaults."""
    out: dict[str, str | None] = {}
    for i in instructions(text):
        if i.keyword == "FROM":
            break
        if i.keyword == "ARG":
            name, eq, default = i.args.partition("=")
            out[name.strip()] = default.strip().strip('"') if eq else None
    return out


def expand(value: str, variables: dict[str, str | None]) -> str:
    """``${NAME}`` / ``$NAME`` substitution as in FROM lines (unset: empty)."""

    def sub(m: re.Match[str]) -> str:
        return variables.get(m.group(1) or m.group(2)) or ""

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)
