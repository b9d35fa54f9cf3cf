"""The command line itself: ``--version``, argparse's errors in fakescan's one-line style, help text everywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version
from typing import Iterator

import pytest

from fakescan.cli import build_parser, main
from fakescan.errors import UsageError


def test_version_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "fakescan.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"fakescan {version('fakescan')}\n", "")


@pytest.mark.parametrize(("argv", "expected"), [
    (["scan", "./photos", "--min-size", "abc"], "fakescan scan: error: argument --min-size: invalid int value: 'abc'"),
    (["results", "--verdict", "maybe"], "fakescan results: error: argument --verdict: invalid choice: 'maybe'"),
    (["status", "--bogus"], "fakescan: error: unrecognized arguments: --bogus"),
    (["scan"], "fakescan scan: error: the following arguments are required: SOURCE"),
    (["detectors"], "fakescan detectors: error: the following arguments are required: COMMAND"),
    (["no-such-command"], "fakescan: error: argument COMMAND: invalid choice: 'no-such-command'"),
    ([], "fakescan: error: the following arguments are required: COMMAND"),
])
def test_argument_errors_are_one_line_with_the_usage_exit_code(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == UsageError.exit_code
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(expected) and lines[0].endswith("--help)"), lines[0]
    assert "usage:" not in captured.err and captured.out == ""


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # an alias maps to the same parser
                yield from all_parsers(sub)


def test_every_command_and_option_has_help_text():
    missing = []
    for prog, parser in all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions}
                missing += [f"{prog} {name}" for name in action.choices if name not in helped]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "no help text: " + ", ".join(missing)
