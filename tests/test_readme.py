"""The README against the code: a command, flag, make target or setting it names must exist.

What a user pastes from the README (a `sensorstream ...` line, a `make ...` target, a
`SENSORSTREAM_...` variable) is checked against the real CLI (its click command tree), the real
Makefile (make's own database) and the real Settings, so a README that drifts from the code fails
here. No broker, Spark or browser: this is the fast tier. Running the README's read commands
against a live pipeline is the acceptance test's part (tests/test_acceptance.py).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

import pytest
import typer

from kit.readme import README, ROOT, SPAN, fenced_blocks, inline_spans, section, shell_lines
from sensorstream.cli import app
from sensorstream.config import ENV_PREFIX, Settings

_PLACEHOLDERS = {"...", "…"}


def readme_invocations() -> list[str]:
    """Every `sensorstream ...` the README shows: inline spans, code-block lines, and each Commands
    table row's first cell as one text (`... create [NAME] ...` / `list` / `describe [NAME]`)."""
    found = [s for s in inline_spans() if s.startswith("sensorstream ")]
    for block in fenced_blocks():
        found += [line for line in shell_lines(block) if line.startswith("sensorstream ")]
    for row in command_rows():
        found.append(row.first_cell)
    return found


@dataclass
class CommandRow:
    first_cell: str  # backticks removed
    described: list[str]  # the code spans of the other cells


def command_rows() -> list[CommandRow]:
    rows = []
    for line in section("Commands").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`sensorstream "):
            described = [s for cell in cells[1:] for s in SPAN.findall(cell)]
            rows.append(CommandRow(cells[0].replace("`", ""), described))
    return rows


# --- the CLI as click sees it ------------------------------------------------------------------------
ROOT_COMMAND = typer.main.get_command(app)


def option_names(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return {n for n in names if n.startswith("-")}


def subcommand(group, name: str):
    return group.get_command(typer.Context(group), name) if hasattr(group, "get_command") else None


def resolve(words: list[str], parent: list[str]) -> tuple[list[str], object, list[str]]:
    """Follow ``words`` from the command at path ``parent`` down the command tree.

    Returns the command's path, the command, and the words left (its arguments and flags).
    Raises AssertionError naming the first word that is not a command there.
    """
    path, command = [], ROOT_COMMAND
    for name in parent:
        path, command = [*path, name], subcommand(command, name)
    while words and hasattr(command, "get_command") and not words[0].startswith("-"):
        child = subcommand(command, words[0])
        assert child is not None, f"`sensorstream {' '.join([*path, words[0]])}`: no such command"
        path, command, words = [*path, words[0]], child, words[1:]
    return path, command, words


def check_flags(path: list[str], command, words: list[str]) -> None:
    known = option_names(command)
    for word in words:
        if word.startswith("-") and len(word) > 1:
            flag = word.split("=", 1)[0]
            assert flag in known, (
                f"`sensorstream {' '.join(path)}` has no option {flag} (it has {sorted(known)})"
            )


def words_of(text: str) -> list[str]:
    """Shell words of an invocation, with the README's [optional] brackets and ... dropped."""
    words = [w.strip("[]") for w in shlex.split(text)]
    return [w for w in words if w and w not in _PLACEHOLDERS]


def check_invocation(text: str) -> list[list[str]]:
    """Check one README invocation; ``a / b / c`` names siblings (``kafka start / stop``) or, when a
    part starts with ``sensorstream``, another command. Returns the command paths it named."""
    paths: list[list[str]] = []
    for part in text.split(" / "):
        words = words_of(part)
        if words and words[0] == "sensorstream":
            path, command, rest = resolve(words[1:], [])
        else:
            assert paths, f"{text!r}: an alternative before any command"
            path, command, rest = resolve(words, paths[-1][:-1])
        check_flags(path, command, rest)
        paths.append(path)
    return paths


@pytest.mark.parametrize("text", sorted(set(readme_invocations())))
def test_every_command_the_readme_shows_exists_with_its_flags(text):
    assert check_invocation(text)


@pytest.mark.parametrize("row", command_rows(), ids=lambda row: row.first_cell[:50])
def test_the_flags_a_command_row_describes_belong_to_its_command(row):
    """`--late` in the produce row, `start --foreground` in the kafka row: options of that row's commands."""
    paths = check_invocation(row.first_cell)
    commands = [resolve(path, [])[1] for path in paths]
    for span in row.described:
        words = words_of(span)
        if not words or not any(w.startswith("--") for w in words):
            continue
        if words[0].startswith("-"):
            flags = {w.split("=", 1)[0] for w in words if w.startswith("-")}
            assert any(flags <= option_names(c) for c in commands), (
                f"{span!r} in the row of {row.first_cell!r}: no command of that row has {sorted(flags)}"
            )
        else:  # `start --foreground`: a sibling of the row's commands
            path, command, rest = resolve(words, paths[0][:-1])
            check_flags(path, command, rest)


def test_the_checker_refuses_what_does_not_exist():
    for wrong in (
        "sensorstream nonsense",
        "sensorstream produce --no-such-flag 3",
        "sensorstream kafka start / teleport",
        "sensorstream status [--yaml]",
    ):
        with pytest.raises(AssertionError):
            check_invocation(wrong)


def test_the_rows_of_the_commands_table_are_found():
    """Guards the table parsing: a reformatted table must not make the test above check nothing."""
    firsts = [row.first_cell.split()[1] for row in command_rows()]
    for command in ("produce", "stream", "run", "status", "query", "kafka"):
        assert command in firsts


# --- make targets ----------------------------------------------------------------------------------
def makefile_targets() -> set[str]:
    """The targets make itself knows in the Makefile (its database, ``make -p``), not a hand list."""
    out = subprocess.run(
        ["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout
    lines = out.splitlines()
    return {
        m.group(1)
        for prev, line in zip(["", *lines], lines, strict=False)
        if (m := re.match(r"^([A-Za-z0-9][^\s:=#$%]*):(?!=)", line)) and prev != "# Not a target:"
    }


def readme_make_targets() -> set[str]:
    texts = inline_spans() + [line for b in fenced_blocks() for line in shell_lines(b)]
    return {m.group(1) for t in texts for m in re.finditer(r"(?:^|\s)make ([A-Za-z0-9][\w.-]*)", t)}


def test_every_make_target_the_readme_names_exists():
    named, targets = readme_make_targets(), makefile_targets()
    assert {"run", "test"} <= named  # the README's two commands are found at all
    assert named <= targets, f"the README names make targets the Makefile lacks: {sorted(named - targets)}"


# --- settings --------------------------------------------------------------------------------------
def test_every_setting_is_in_the_readmes_settings_section():
    """Each Settings field is documented there, as `NAME` (the table's short form) or `SENSORSTREAM_NAME`."""
    spans = inline_spans(section("Settings"))
    documented = {s.removeprefix(ENV_PREFIX).split("=", 1)[0] for s in spans}
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert not missing, f"settings missing from the README's Settings section: {missing}"


def provisioned_variables() -> set[str]:
    """`SENSORSTREAM_` variables that other programs read from the repository's files: Grafana's
    provisioning expands `${SENSORSTREAM_PG_ADDRESS}`, which is Grafana's, not one of our settings."""
    files = [*(ROOT / "grafana").rglob("*.yaml"), ROOT / "docker-compose.yml"]
    return {m for f in files for m in re.findall(rf"\$\{{{ENV_PREFIX}([A-Z0-9_]+)\}}", f.read_text())}


def test_every_setting_the_readme_names_exists():
    fields = {name.upper() for name in Settings.model_fields} | provisioned_variables()
    named = set(re.findall(rf"{ENV_PREFIX}([A-Z0-9_]+)", README))
    table = set()
    for line in section("Settings").splitlines():
        if line.startswith("| `"):
            table |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    assert named and table
    assert named <= fields, f"the README sets variables no setting reads: {sorted(named - fields)}"
    assert table <= fields, f"the Settings table names settings that do not exist: {sorted(table - fields)}"


# --- the module map -------------------------------------------------------------------------------
PACKAGE = ROOT / "src" / "sensorstream"
MAP_NAME = re.compile(r"([a-z_]+)(/|\.py)(?![\w/])")


def test_the_readmes_module_map_is_the_package_tree():
    block = section("Layout").split("```")[1]
    # each line's left column (up to a gap of 3+ spaces) names folders and modules; the rest says why
    left = [re.split(r" {3,}", line.strip())[0] for line in block.splitlines()[2:]]
    named = {name + kind for line in left for name, kind in MAP_NAME.findall(line)}
    tree = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    tree |= {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}
    assert named == tree


def test_the_layout_doc_names_every_module_of_every_package():
    doc = (ROOT / "docs" / "layout.md").read_text()
    bullets = dict(re.findall(r"^- \*\*`([a-z_]+)/`\*\*:(.*?)(?=^- |^\n|\Z)", doc, flags=re.M | re.S))
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert sorted(bullets) == packages
    missing = [
        f"{package}/{path.name}"
        for package, text in bullets.items()
        for path in sorted((PACKAGE / package).iterdir())
        if not path.name.startswith("__")
        and (path.suffix == ".py" or (path / "__init__.py").exists())
        and (path.name + ("/" if path.is_dir() else "")) not in text
    ]
    assert missing == []
