"""The README as the tests read it: its shell code blocks, its `code` spans, its sections."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")


def fenced_blocks(text: str = README) -> list[str]:
    """The fenced blocks marked as shell (```bash): what a user pastes, not what a command prints."""
    return [body for info, body in _FENCE.findall(text) if info.strip() in {"bash", "sh", "shell"}]


def inline_spans(text: str = README) -> list[str]:
    """The `code` spans outside fenced blocks."""
    return SPAN.findall(_FENCE.sub("", text))


def section(heading: str, text: str = README) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def shell_lines(block: str) -> list[str]:
    """A shell block's command lines, without blank lines, comment lines and trailing `` # ...``."""
    lines = []
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def quick_start_commands() -> tuple[list[str], list[str]]:
    """The Setup section's lines a user pastes beside a running `make run`: the set-up lines
    (``source``/``export``) and the commands, `make` itself left out."""
    setup, commands = [], []
    for block in fenced_blocks(section("Setup")):
        for line in shell_lines(block):
            if line.startswith(("source ", ". ", "export ")):
                setup.append(line)
            elif not line.startswith("make "):
                commands.append(line)
    return setup, commands
