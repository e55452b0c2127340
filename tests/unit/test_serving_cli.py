"""``recommend``'s argument parsing: options before or after the ``status`` command."""

from __future__ import annotations

import pytest

from recflow.serving.cli import parse


@pytest.mark.parametrize(
    ("argv", "command", "server"),
    [
        (["--server", "h:1", "status"], "status", "h:1"),
        (["status", "--server", "h:1"], "status", "h:1"),
        (["--user", "1", "-k", "3", "--server", "h:1"], None, "h:1"),
        (["--server", "h:1", "--user", "1"], None, "h:1"),
    ],
)
def test_options_before_or_after_the_command(
    argv: list[str], command: str | None, server: str
) -> None:
    args = parse(argv)
    assert (args.command, args.server) == (command, server)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-k", "3"], "required: --user"),
        (["status", "--user", "1"], "status takes --server"),
        (["--user", "1", "--label", "a", "--version", "2"], "not allowed with argument --label"),
    ],
)
def test_wrong_combinations_are_refused_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
