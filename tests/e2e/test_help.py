"""``--help`` a person can read at 80 columns, and docs/cli.md listing every option.

The help is read as a user reads it: the real ``padprep`` in a subprocess with ``COLUMNS`` set. Every option
a help shows must be there whole (no ``--conversations-…``), every line must fit, ``padprep build --help``
must fit in about a screen, and the options it leaves out (field renames, tuning) must be listed by
``--help-all``, documented in docs/cli.md, and still work."""

from __future__ import annotations

import json
import re

import pytest
import typer

from padprep.cli import app
from padprep.cli.help import name_column, option_names
from tests.conftest import ROOT, SAMPLE, padprep_cli

COMMANDS = typer.main.get_command(app).commands
BUILD = COMMANDS["build"]
CLI_DOC = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
MAX_BUILD_HELP_LINES = 62


def _help(*args: str, columns: int = 80) -> str:
    res = padprep_cli(*args, env={"COLUMNS": str(columns), "NO_COLOR": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    return res.stdout


def _options(command) -> list:
    return [p for p in command.params if p.param_type_name == "option"]


def _whole(name: str, text: str) -> bool:
    """``name`` (an option, a choice) appears with nothing of an option name glued to either side."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _assert_readable(text: str, columns: int) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > columns]
    assert not too_wide, f"lines wider than {columns} columns:\n" + "\n".join(too_wide)
    assert "…" not in text, "something is cut: " + next(line for line in text.splitlines() if "…" in line)
    assert "<bool>" not in text and "<str>" not in text and "<int>" not in text, "type noise in the help"
    assert "╭" not in text and "│" not in text, "a Rich panel: its columns cut option names at 80 columns"


def _assert_shows_whole(command, text: str, *, hidden: bool) -> None:
    for param in _options(command):
        if param.hidden and not hidden:
            listed = [n for n in param.opts if re.search(rf"^ +{re.escape(n)}(?![\w-])", text, re.M)]
            assert not listed, f"{listed} is hidden but listed"
            continue
        for name in option_names(param):
            assert _whole(name, text), f"{name} is not shown whole in:\n{text}"
        for choice in getattr(getattr(param, "type_descriptor", None), "choices", None) or ():
            value = str(getattr(choice, "value", choice))
            assert _whole(value, text), f"{name_column(param)}: the choice {value!r} is not shown whole"


@pytest.mark.parametrize("columns", [80, 60])
def test_build_help_fits_a_screen_with_every_name_whole(columns):
    text = _help("build", "--help", columns=columns)
    _assert_readable(text, columns)
    _assert_shows_whole(BUILD, text, hidden=False)
    if columns == 80:
        lines = text.splitlines()
        assert len(lines) <= MAX_BUILD_HELP_LINES, f"{len(lines)} lines at 80 columns"
        # the usage line names what a build needs, in capitals, and no type noise
        assert lines[0] == "Usage: padprep build [INPUTS...] -t TOKENIZER -o DIR [OPTIONS]"
        # a plain flag is its name alone; an on-by-default flag shows the switch that turns it off
        assert re.search(r"^  --pack {2,}\S", text, re.M) and re.search(r"^  --no-append-eos {2,}\S", text, re.M)
        # where the rest are
        assert "--help-all" in text and "docs/cli.md" in text


def test_build_help_all_lists_every_option_whole():
    text = _help("build", "--help-all")
    _assert_readable(text, 80)
    _assert_shows_whole(BUILD, text, hidden=True)
    assert len(text.splitlines()) > len(_help("build", "--help").splitlines())
    assert any(p.hidden for p in _options(BUILD)), "--help-all is for the options --help leaves out"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_is_readable(name):
    """inspect's and any later command's help too (a command added with @app.command gets this layout)."""
    text = _help(name, "--help")
    _assert_readable(text, 80)
    _assert_shows_whole(COMMANDS[name], text, hidden=False)
    assert text.startswith(f"Usage: padprep {name} ")


def test_top_level_help_lists_the_commands():
    bare = padprep_cli(env={"COLUMNS": "80"})  # ``padprep`` alone: the same help (on stderr, exit 2, as click does)
    assert bare.returncode == 2
    for text in (_help("--help"), bare.stdout + bare.stderr):
        _assert_readable(text, 80)
        for name, command in COMMANDS.items():
            assert re.search(rf"^  {name} +\S", text, re.M), f"{name} not listed:\n{text}"
        assert _whole("--version", text)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_docs_cli_lists_every_option(name):
    """Every option of every command, hidden ones included, is documented in docs/cli.md."""
    missing = [
        opt
        for param in _options(COMMANDS[name])
        for opt in dict.fromkeys([*param.opts, *option_names(param)])  # and --no-append-eos, the switch a default-on flag shows
        if opt.startswith("--") and not _whole(opt, CLI_DOC)
    ]
    assert not missing, f"docs/cli.md does not document `padprep {name}` {', '.join(missing)}: add a row for each"


def test_hidden_options_still_work(tmp_path):
    """--messages-field and the tuning options are out of --help, not out of the command."""
    record = json.loads((SAMPLE / "chat.jsonl").read_text(encoding="utf-8").splitlines()[0])
    data = tmp_path / "renamed.jsonl"
    data.write_text(json.dumps({"turns": record["messages"]}) + "\n", encoding="utf-8")
    res = padprep_cli(
        "build", str(data), "-t", str(SAMPLE / "tokenizer"), "-o", str(tmp_path / "out"),
        "--messages-field", "turns", "--workers", "1", "--shard-tokens", "65536", "--span-method", "template",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["totals"]["rows_written"] == 1, manifest["totals"]
    options = manifest["options"]
    assert options["shard_tokens"] == 65536 and options["span_method"] == "template", options
