"""Every command of README's "Asking for recommendations" block, run as README writes it.

The commands are parsed out of README.md, so the test and the documentation cannot drift: a
new or changed line there is run here. Only ``--server`` is added (at the end, or first for the
"options before the command" form) to reach the test's server on a free port.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from _exported_models import small_features

from recflow.serving.model_config import ModelEntry, write_entries

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Asking for recommendations"
MODEL = "recommender"  # the CLI's default model name, which README relies on


def readme_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The command lines (comments stripped) of the first bash block under ``SECTION``."""
    text = readme.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    after = text.split(SECTION, 1)[1]
    block = re.search(r"```bash\n(.*?)```", after, re.S)
    assert block, f"README.md: expected a ```bash block under {SECTION!r}"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def _executable(words: list[str]) -> list[str]:
    """README's ``.venv/bin/recommend`` as installed beside this interpreter."""
    assert Path(words[0]).name == "recommend", f"expected a recommend command, found {words}"
    script = Path(sys.executable).parent / "recommend"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "recflow.serving.cli"]  # no console script (not installed)


def _export(out_dir: Path, shift: int) -> Path:
    from recflow.models import export_model

    features = small_features(shift)
    return export_model(None, features, out_dir, top_k=10, warmup_user_ids=["user-0"],
                        model_kind="popularity")  # fmt: skip


def test_readme_recommendation_commands_run_as_written(start_server: Any, tmp_path: Path) -> None:
    from recflow.promotion import install_version

    base = tmp_path / "models" / MODEL
    for version in (1, 2):
        install_version(_export(tmp_path / f"export-{version}", version), base, version)
    config = tmp_path / "models.config"
    write_entries(config, [ModelEntry(MODEL, str(base), (1, 2), {"stable": 1})])
    server = start_server(
        "--model_config_file", str(config), "--allow_version_labels_for_unavailable_models"
    )
    env = {**os.environ, "RECFLOW_PSEUDONYM_KEY": "k" * 32, "RECFLOW_HOME": str(tmp_path)}

    def run(words: list[str]) -> str:
        proc = subprocess.run(words, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, f"{shlex.join(words)} failed:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    commands = readme_commands()
    assert len(commands) >= 3, commands
    seen = set()
    for words in commands:
        exe, options = _executable(words), words[1:]
        out = run([*exe, *options, "--server", server.address])
        if "status" in options:
            seen.add("status")
            assert re.search(r"^\s+1\s+AVAILABLE", out, re.M), out
            assert re.search(r"^\s+2\s+AVAILABLE", out, re.M), out
            # the same command with the option first (issue 13: it used to demand --user)
            assert run([*exe, "--server", server.address, *options]) == out
        elif "--version" in options:
            seen.add("version")
            want = options[options.index("--version") + 1]
            assert f"version {want} (asked for version {want})" in out, out
        else:
            seen.add("label")
            k = int(options[options.index("-k") + 1]) if "-k" in options else 10
            assert f"Top {k} for user" in out and "(asked for label 'stable')" in out, out
            assert "version 1 " in out, out
            rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
            assert len(rows) == k, out
    assert seen == {"status", "version", "label"}, seen
