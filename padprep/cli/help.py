"""``--help`` a person can read at 80 columns: options in titled sections, each name whole on its line.

Typer's Rich panels give every option four columns at any width; at 80 columns they cut option names
(``--conversations-…``) and stack a help text one word a line. This layout is click's plain one, with the
Rich panel titles as section headings: the option with its value (``--max-length N``, a choice list
``--truncation drop|right|left``, a plain flag bare), its help wrapped beside it, or under it where the
option is wider than the column. Nothing is cut: words wrap at spaces only, never at a hyphen.

Hidden options (field renames, tuning) are left out of ``--help`` and listed by ``--help-all``; every one is
in docs/cli.md.
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
from enum import Enum
from typing import Any

import typer.core

OPTIONS = "Options"
ARGUMENTS = "Arguments"
COMMANDS = "Commands"
_ALL = "padprep.help_all"  # ctx.meta key: --help-all lists hidden options too
_NAME_COLUMN_MAX = 27  # a wider option puts its help on the next line


def show_all(ctx: Any, value: bool) -> None:
    """The ``--help-all`` callback: the help with every option, hidden ones included."""
    if not value or getattr(ctx, "resilient_parsing", False):
        return
    ctx.meta[_ALL] = True
    typer.echo(ctx.get_help(), color=ctx.color)
    ctx.exit()


def _wrap(text: str, width: int, indent: int = 0, first: int | None = None) -> list[str]:
    """Lines of at most ``width`` columns, broken at spaces only (an option or choice name stays whole)."""
    pad = " " * indent
    return textwrap.wrap(
        " ".join(text.split()),
        width=max(width, 20),
        initial_indent=" " * (indent if first is None else first),
        subsequent_indent=pad,
        break_on_hyphens=False,
        break_long_words=False,
    ) or [pad.rstrip()]


def _choices(param: Any) -> list[str] | None:
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x
    found = getattr(desc, "choices", None) if desc is not None else getattr(getattr(param, "type", None), "choices", None)
    if found is None:
        return None
    return [str(c.value) if isinstance(c, Enum) else str(c) for c in found]


def _default(param: Any) -> str | None:
    """The ``[default: X]`` worth printing: none for flags, None or a default the help already gives."""
    if getattr(param, "is_flag", False) or param.default is None or getattr(param, "required", False):
        return None
    show = getattr(param, "show_default", True)
    if isinstance(show, str):
        return show
    if not show:
        return None
    value = param.default
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else None
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000 else str(value)


def name_column(param: Any) -> str:
    """What the first column shows: ``-t, --tokenizer TOK``, ``--pack``, ``--no-append-eos``, ``INPUTS...``."""
    if getattr(param, "param_type_name", "") == "argument":
        name = param.metavar or (param.name or "").upper()
        return name if param.metavar or param.nargs == 1 else f"{name}..."
    if getattr(param, "is_flag", False):
        # a flag with an off switch whose default is on: the switch that changes something
        shown = param.secondary_opts if param.secondary_opts and param.default else param.opts
        return ", ".join(sorted(shown, key=len))
    names = ", ".join(sorted(param.opts, key=len))
    choices = _choices(param)
    value = param.metavar or ("|".join(choices) if choices else _value_name(param))
    return f"{names} {value}"


def _value_name(param: Any) -> str:
    """An option's value where it declares no metavar: N for a number, F a fraction, PATH a path, else its name."""
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x; click's param.type before
    kind = getattr(desc, "annotation", None) if desc is not None else None
    kind = getattr(kind, "__name__", "") or getattr(getattr(param, "type", None), "name", "")
    named = {"int": "N", "integer": "N", "float": "F", "Path": "PATH", "path": "PATH"}
    return named.get(kind, (param.name or "value").upper())


def option_names(param: Any) -> list[str]:
    """Every name the help shows for ``param`` (what a test checks is there whole)."""
    return [n.strip(",") for n in name_column(param).split() if n.startswith("-")]


def _help_text(param: Any) -> str:
    text = inspect.cleandoc(getattr(param, "help", None) or "")
    default = _default(param)
    return f"{text} [default:\N{NO-BREAK SPACE}{default}]" if default else text  # the default on one line


def _rows(formatter: Any, rows: list[tuple[str, str]], name_width: int) -> None:
    width = formatter.width
    help_at = 2 + name_width + 2
    for name, text in rows:
        if len(name) > name_width:
            # too wide for the column: the name on its line (a choice list too long for one wraps at its bars)
            if 2 + len(name) <= width:
                formatter.write(f"  {name}\n")
            else:
                for line in _wrap(name.replace("|", "| "), width, indent=6, first=2):
                    formatter.write(line.replace("| ", "|") + "\n")
            if text:  # and its help under it
                formatter.write(
                    "".join(line.replace("\N{NO-BREAK SPACE}", " ") + "\n" for line in _wrap(text, width, indent=help_at))
                )
            continue
        lines = _wrap(text, width, indent=help_at) if text else [""]
        lines[0] = f"  {name:<{name_width}}  {lines[0].lstrip()}".rstrip()
        formatter.write("".join(line.replace("\N{NO-BREAK SPACE}", " ") + "\n" for line in lines))


def _sections(command: Any, ctx: Any) -> dict[str, list[Any]]:
    """Params by help panel, in the order they are declared; hidden ones only under --help-all."""
    every = ctx.meta.get(_ALL, False)
    sections: dict[str, list[Any]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) and not every:
            continue
        default = ARGUMENTS if getattr(param, "param_type_name", "") == "argument" else OPTIONS
        sections.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(param)
    # the arguments first, the catch-all Options (--help, --help-all) last
    ordered = {ARGUMENTS: sections.pop(ARGUMENTS)} if ARGUMENTS in sections else {}
    ordered.update(sections)
    if OPTIONS in ordered:
        ordered[OPTIONS] = ordered.pop(OPTIONS)
    return ordered


def _usage(command: Any, ctx: Any, formatter: Any) -> None:
    pieces = [
        name_column(p) if p.required else f"[{name_column(p)}]"
        for p in command.get_params(ctx)
        if getattr(p, "param_type_name", "") == "argument"
    ]
    if command.options_metavar:
        pieces.append(command.options_metavar)
    if isinstance(command, typer.core.TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    formatter.write("\n".join(_wrap(f"Usage: {ctx.command_path} {' '.join(pieces)}", formatter.width, indent=7, first=0)))
    formatter.write("\n")


def _paragraphs(text: str, formatter: Any) -> None:
    """The command's docstring: paragraphs wrapped; one that starts with a ``\\b`` line (click's mark) kept as written."""
    for block in inspect.cleandoc(text).partition("\f")[0].split("\n\n"):
        formatter.write("\n")
        if block.startswith("\b\n"):
            formatter.write("".join(f"  {line}\n" for line in block.splitlines()[1:]))
        else:
            formatter.write("\n".join(_wrap(block, formatter.width, indent=2)) + "\n")


def format_help(command: Any, ctx: Any, formatter: Any) -> None:
    _usage(command, ctx, formatter)
    if command.help:
        _paragraphs(command.help, formatter)
    sections = _sections(command, ctx)
    if isinstance(command, typer.core.TyperGroup):
        listed = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
        shown = [(name, cmd) for name, cmd in listed if cmd is not None and not cmd.hidden]
        sections = {COMMANDS: shown, **sections}
    names = [name_column(p) for params in sections.values() for p in params if not isinstance(p, tuple)]
    names += [name for name, _ in sections.get(COMMANDS, [])]
    name_width = min(max((len(n) for n in names if len(n) <= _NAME_COLUMN_MAX), default=10), _NAME_COLUMN_MAX)
    for title, params in sections.items():
        formatter.write(f"\n{_style(title + ':')}\n")
        if title == COMMANDS:
            _rows(formatter, [(name, cmd.get_short_help_str(limit=200)) for name, cmd in params], name_width)
        else:
            _rows(formatter, [(name_column(p), _help_text(p)) for p in params], name_width)
    if command.epilog:
        _paragraphs(command.epilog, formatter)


def _style(title: str) -> str:
    """Section titles in bold on a colour terminal (click strips it off one, and NO_COLOR turns it off)."""
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return title
    return typer.style(title, bold=True)


class HelpCommand(typer.core.TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        format_help(self, ctx, formatter)


class HelpGroup(typer.core.TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        format_help(self, ctx, formatter)


class App(typer.Typer):
    """A Typer app whose commands and group print this help (a command added later gets it too)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=HelpGroup, **kwargs)

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or HelpCommand, **kwargs)
