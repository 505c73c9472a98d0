"""The README's CLI table says what ``--help`` says: every command has a row, and each row lists exactly the
options of that command (by any of their names; ``--help`` aside)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.main

from medseg.cli.main import app

README = Path(__file__).parents[2] / "README.md"


def _commands() -> dict[str, object]:
    """'data scan' → its (click-style) command, for every leaf command of the ``medseg`` app."""
    root = typer.main.get_command(app)
    out: dict[str, object] = {}

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = cmd

    walk(root, [])
    return out


def _rows() -> dict[str, str]:
    """command path → the README row's command cell(s)."""
    text = README.read_text()
    table = text[text.index("## CLI reference"):]
    table = table[:table.index("\n\n", table.index("| command |"))]
    cells: dict[str, str] = {}
    for line in table.splitlines():
        first = line.split(" | ")[0]
        for usage in re.findall(r"`medseg ([^`]+)`", first):
            words = [w for w in usage.split() if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
            for n in range(len(words), 0, -1):
                key = " ".join(words[:n])
                if key in _COMMANDS:
                    cells[key] = cells.get(key, "") + " " + usage
                    break
    return cells


_COMMANDS = _commands()


def test_every_command_has_a_row() -> None:
    assert sorted(_COMMANDS) == sorted(_rows())


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_a_rows_options_are_the_commands(command: str) -> None:
    cmd = _COMMANDS[command]
    row = _rows()[command]
    written = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z0-9-]*)", row))
    params = [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and "--help" not in p.opts]
    missing = [p.opts[0] for p in params if not written & set(p.opts) and not written & set(p.secondary_opts)]
    known = {o for p in params for o in (*p.opts, *p.secondary_opts)}
    extra = sorted(o for o in written if o.startswith("--") and o not in known)
    assert not missing and not extra, f"README lacks {missing}, has unknown {extra}"
