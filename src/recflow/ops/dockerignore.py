""".dockerignore rules as Docker applies them, to check a build context without an engine.

Follows Docker's documented rules (docs.docker.com, "Build context", .dockerignore files) and
their implementation in moby/patternmatcher (``New``, ``Pattern.compile``,
``MatchesOrParentMatches``), which both the classic builder and BuildKit use:

- one pattern per line; ``#`` starts a comment line; surrounding whitespace is trimmed; each
  pattern is cleaned like Go's ``filepath.Clean`` (so ``/foo/`` and ``./foo`` mean ``foo``);
- ``*`` matches any run of characters except ``/``, ``?`` one character except ``/``,
  ``[...]`` a character class (``[^...]`` negated, ranges ``a-z``), ``\\`` escapes the next
  character, as in Go's ``filepath.Match``;
- ``**`` matches any number of directories, including none (``**/foo`` also matches ``foo``);
- ``!pattern`` re-includes what an earlier pattern excluded; the last matching line wins;
- a pattern that matches a directory excludes everything under it (a path is excluded when
  the pattern matches it or any of its parent directories).

Only what a context walk needs is implemented (no Windows separators).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from recflow.errors import ConfigError

# Characters that are special in a regular expression but plain in a filepath.Match pattern.
_ESCAPE = set(".+()|{}$^")
_WILDCARDS = set("*?[]\\")


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the leading "!"
    exclusion: bool  # a "!" line: re-includes
    regex: re.Pattern[str]

    def match(self, path: str) -> bool:
        # moby's "suffix match": a leading ** followed by no other wildcard compares the
        # rest as a plain suffix ("**foo" matches "barfoo"; "**/foo" also matches "foo").
        if self.text.startswith("**") and not _WILDCARDS & set(self.text[2:]):
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regex.match(path) is not None


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` for slash paths (``posixpath.normpath`` keeps a leading ``//``)."""
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _class(pattern: str, start: int) -> tuple[str, int]:
    """The regex of the character class opening at ``pattern[start] == '['``; its end index."""
    i = start + 1
    out = "["
    if i < len(pattern) and pattern[i] == "^":
        out += "^"
        i += 1
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        ch = pattern[i]
        first = False
        if ch == "\\" and i + 1 < len(pattern):
            out += re.escape(pattern[i + 1])
            i += 2
            continue
        if ch == "/":
            raise ConfigError(f".dockerignore: a character class cannot hold '/': {pattern!r}")
        out += ch if ch == "-" else re.escape(ch)
        i += 1
    if i >= len(pattern):
        raise ConfigError(f".dockerignore: unclosed character class in {pattern!r}")
    return out + "]", i + 1


def compile_pattern(text: str) -> re.Pattern[str]:
    """A cleaned dockerignore pattern as an anchored regular expression over slash paths."""
    out = "^"
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "*":
            if i + 1 < n and text[i + 1] == "*":
                i += 2
                if i < n and text[i] == "/":
                    i += 1
                # "**" at the end matches everything below; elsewhere any number of dirs.
                out += ".*" if i >= n else "(.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            part, i = _class(text, i)
            out += part
            continue
        elif ch == "\\":
            if i + 1 < n:
                out += re.escape(text[i + 1])
                i += 2
                continue
            out += re.escape("\\")
        elif ch in _ESCAPE:
            out += "\\" + ch
        else:
            out += re.escape(ch) if not ch.isalnum() and ch not in "/_-" else ch
        i += 1
    return re.compile(out + "$", re.DOTALL)


def parse(text: str) -> list[Pattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                raise ConfigError('.dockerignore: illegal exclusion pattern "!"')
        # Leading and trailing slashes are dropped: patterns are relative to the context root.
        cleaned = clean(line).strip("/") or "."
        patterns.append(Pattern(cleaned, exclusion, compile_pattern(cleaned)))
    return patterns


class DockerIgnore:
    """The rules of one .dockerignore file (an absent file excludes nothing)."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)

    @classmethod
    def from_file(cls, path: Path) -> DockerIgnore:
        return cls(parse(path.read_text(encoding="utf-8")) if path.is_file() else [])

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context root) is left out of the build context."""
        file = clean(path).lstrip("/")
        if file == ".":
            return False  # Docker never excludes the context root itself
        parts = file.split("/")
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for pattern in self.patterns:
            # An inclusion is skipped once matched, an exclusion until something matched.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(file) or any(pattern.match(p) for p in parents)
            if hit:
                matched = not pattern.exclusion
        return matched

    def context_files(self, root: Path) -> Iterator[Path]:
        """Every file of the build context under ``root`` (relative paths), as sent to the
        builder. An excluded directory is skipped unless an exception (``!``) pattern starts
        with its path, the rule of moby's context walk (pkg/archive ``TarWithOptions``)."""
        stack = [root]
        while stack:
            folder = stack.pop()
            for entry in sorted(folder.iterdir()):
                rel = entry.relative_to(root).as_posix()
                if entry.is_dir() and not entry.is_symlink():
                    if not self.excluded(rel) or self._reincludes_below(rel):
                        stack.append(entry)
                elif not self.excluded(rel):
                    yield Path(rel)

    def _reincludes_below(self, directory: str) -> bool:
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)
