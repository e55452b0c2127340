"""Under ``CI=true`` a skipped test fails the run unless ``tests/skip_allowlist.toml`` lists it.

A skip that nobody sees is a promised component that silently did not run (issue 13). The
allow-list holds only tests that cannot run for a reason outside the machine's software: its
hardware or services it cannot have (``kind`` is one of ``OUTSIDE_KINDS``). Anything ``make
test`` installs (PostgreSQL, chromium, docker-compose, Python packages) or that lives in the
shared data folder must run. An entry is stale, and fails the run too, when its file does not
exist, when its test was collected from its file but no such test exists, or when the test ran
without skipping.

Each entry::

    [[skip]]
    test = "tests/integration/test_x.py::test_y"   # a pytest node id
    kind = "gpu"                                    # one of OUTSIDE_KINDS
    reason = "needs an NVIDIA GPU; this machine has none"

Outside CI nothing changes: skips are reported as usual.

Under pytest-xdist (``make test`` runs ``-n 2``) each worker collects the whole suite but runs
only part of it; workers pass what they saw to the controller, which applies the rules once.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ALLOWLIST = Path("tests") / "skip_allowlist.toml"
OUTSIDE_KINDS = {
    "gpu": "hardware this machine does not have (a GPU)",
    "docker-engine": "a Docker engine, which this machine cannot run",
}
TRUE = {"1", "true", "yes"}
WORKER_KEY = "recflow_skip_guard"  # where an xdist worker leaves its findings for the controller


@dataclass(eq=False)  # a pytest plugin must be hashable
class SkipGuard:
    root: Path
    enforce: bool
    allowed: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # node id -> skip reason
    ran: set[str] = field(default_factory=set)  # node ids that ran (their call phase)
    collected: set[str] = field(default_factory=set)
    collected_files: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, config: pytest.Config) -> SkipGuard:
        guard = cls(root=config.rootpath, enforce=os.environ.get("CI", "").lower() in TRUE)
        guard.load()
        return guard

    # -- the list -------------------------------------------------------------------------
    def load(self) -> None:
        path = self.root / ALLOWLIST
        if not path.is_file():
            return
        try:
            entries = tomllib.loads(path.read_text(encoding="utf-8")).get("skip", [])
        except tomllib.TOMLDecodeError as error:
            self.problems.append(f"{ALLOWLIST}: not valid TOML ({error})")
            return
        for entry in entries:
            test, kind = str(entry.get("test", "")), str(entry.get("kind", ""))
            if not test or kind not in OUTSIDE_KINDS or not entry.get("reason"):
                self.problems.append(
                    f"{ALLOWLIST}: entry {entry!r}: expected 'test', 'reason' and a 'kind' among "
                    f"{sorted(OUTSIDE_KINDS)} (reasons outside the machine only)"
                )
                continue
            self.allowed[test] = {"kind": kind, "reason": str(entry["reason"])}

    # -- hooks ----------------------------------------------------------------------------
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # Before -m/-k deselection: a deselected test still exists.
        for item in items:
            self.collected.add(item.nodeid)
            self.collected_files.add(item.nodeid.split("::", 1)[0])

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a whole module skipped at import (importorskip, module skip)
            self.collected_files.add(report.nodeid.split("::", 1)[0])
            self.skipped[report.nodeid] = _reason(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped[report.nodeid] = _reason(report)
        elif report.when == "call":
            self.ran.add(report.nodeid)

    # -- pytest-xdist: workers collect and run, the controller judges -----------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        state = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if not state:  # a worker that died before finishing; xdist reports that itself
            return
        self.skipped.update(state["skipped"])
        self.ran.update(state["ran"])
        self.collected.update(state["collected"])
        self.collected_files.update(state["collected_files"])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            # A worker saw only its share of the tests: hand what it saw to the controller.
            workeroutput[WORKER_KEY] = {
                "skipped": self.skipped,
                "ran": sorted(self.ran),
                "collected": sorted(self.collected),
                "collected_files": sorted(self.collected_files),
            }
            return
        if not self.enforce:
            return
        for nodeid, reason in sorted(self.skipped.items()):
            if not self._allowed(nodeid):
                self.problems.append(
                    f"{nodeid} skipped ({reason}); under CI every test must run. Install what "
                    f"it needs, or list it in {ALLOWLIST} if the reason lies outside the machine"
                )
        for test in sorted(self.allowed):
            file = test.split("::", 1)[0]
            if not (self.root / file).exists():
                self.problems.append(f"{ALLOWLIST}: stale entry {test}: {file} does not exist")
            elif file in self.collected_files and not self._exists(test):
                self.problems.append(f"{ALLOWLIST}: stale entry {test}: no such test in {file}")
            elif any(_covers(test, nodeid) for nodeid in self.ran):
                self.problems.append(
                    f"{ALLOWLIST}: stale entry {test}: it ran without skipping; remove the entry"
                )
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.enforce and self.problems:
            terminalreporter.section("skipped tests under CI=true", red=True, bold=True)
            for line in self.problems:
                terminalreporter.line(line, red=True)

    # -- helpers ----------------------------------------------------------------------------
    def _allowed(self, nodeid: str) -> bool:
        return any(_covers(test, nodeid) for test in self.allowed)

    def _exists(self, test: str) -> bool:
        return any(_covers(test, nodeid) for nodeid in self.collected)


def _covers(entry: str, nodeid: str) -> bool:
    """An entry names a test, a test's parametrisations (no [...]), a class or a whole file."""
    return nodeid == entry or nodeid.startswith((entry + "[", entry + "::"))


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)
