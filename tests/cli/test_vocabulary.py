"""One CLI vocabulary: the shared options are spelled (and default) the same in every command, old spellings
still parse but are not shown, and every command's --help at 80 columns has copyable example commands."""
from __future__ import annotations

import shlex

import pytest
import typer
from typer.testing import CliRunner

from medclipsvd.cli import options
from medclipsvd.cli.app import app

# option -> the commands it must appear in (where it makes sense)
SHARED = {
    "--data-root": ["train", "evaluate", "benchmark", "interpret", "data check", "data split", "predict"],
    "--output": ["train", "evaluate", "benchmark", "demo", "interpret", "data split", "predict", "export"],
    # replacing what an earlier run wrote is asked for with one spelling (export's --overwrite is an alias)
    "--force": ["train", "evaluate", "interpret", "data split", "predict", "export"],
    "--weights": ["summary", "train", "evaluate", "benchmark", "interpret", "register", "predict"],
    "--seed": ["train", "demo", "interpret", "data split"],
    "--device": ["train", "evaluate", "benchmark", "demo", "interpret", "predict"],
    # one meaning everywhere (medclipsvd/device.py, issue 19)
    "--precision": ["train", "evaluate", "benchmark", "interpret", "predict"],
    "--tracking-uri": ["train", "evaluate", "benchmark", "interpret", "register", "predict", "sync"],
    "--no-mlflow": ["train", "evaluate", "benchmark", "interpret"],
    # what to run on: a pipeline (or a registered dataset name), one spelling wherever one is chosen
    "--pipeline": ["train", "evaluate", "interpret", "data check"],
}
OLD_SPELLINGS = {"--root": "--data-root", "--out": "--output", "--backbone-weights": "--weights",
                 "--dataset": "--pipeline"}


def _commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found = {}

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            full = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                walk(cmd, full + " ")
            else:
                found[full] = cmd

    walk(root, "")
    return found


COMMANDS = _commands()


def _options(cmd) -> dict[str, object]:
    """Visible long option name -> parameter."""
    return {o: p for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts + p.secondary_opts
            if o.startswith("--")}


@pytest.mark.parametrize("option", sorted(SHARED))
def test_shared_options_have_one_name_and_one_default(option):
    defaults = set()
    for command in SHARED[option]:
        opts = _options(COMMANDS[command])
        assert option in opts, f"`medclipsvd {command}` has no {option}"
        if option in ("--seed", "--device", "--force", "--precision"):
            defaults.add(opts[option].default)
    if option == "--seed":
        assert defaults == {options.DEFAULT_SEED}
    if option in ("--device", "--precision"):
        assert defaults == {"auto"}
    if option == "--force":
        assert defaults == {False}
    if option == "--output":
        assert all("-o" in _options(COMMANDS[c])[option].opts for c in SHARED[option])


def test_old_spellings_are_hidden_everywhere():
    for name, cmd in COMMANDS.items():
        visible = _options(cmd)
        for old in OLD_SPELLINGS:
            assert old not in visible, f"`medclipsvd {name}` shows {old}; use {OLD_SPELLINGS[old]}"


def test_old_spellings_still_work(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "data" / cls / f"p{i}_{cls}.png")
    runner = CliRunner()
    new = runner.invoke(app, ["data", "split", "--data-root", str(tmp_path / "data"), "--output",
                              str(tmp_path / "new.json"), "--fractions", "0.5,0.25,0.25"])
    old = runner.invoke(app, ["data", "split", "--root", str(tmp_path / "data"), "--out",
                              str(tmp_path / "old.json"), "--fractions", "0.5,0.25,0.25"])
    assert new.exit_code == 0 and old.exit_code == 0, new.output + old.output
    assert (tmp_path / "new.json").read_text() == (tmp_path / "old.json").read_text().replace("old.json", "new.json")


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "80", "TERM": "dumb"},
                                terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _examples(text: str) -> list[list[str]]:
    """Example commands in a help text: a line starting with `medclipsvd ` plus its `\\` continuations."""
    lines = [line.rstrip() for line in text.splitlines()]
    blocks, i = [], 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("medclipsvd ") and not lines[i].lstrip().startswith(("│", "╭")):
            block = [lines[i]]
            while block[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                block.append(lines[i])
            blocks.append(block)
        i += 1
    return blocks


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_help_at_80_columns_has_copyable_examples(command):
    text = _help(command)
    assert "<bool>" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    lines = text.splitlines()
    for block in _examples(text):
        last = lines.index(block[-1]) if block[-1] in lines else None
        after = lines[last + 1].strip() if last is not None and last + 1 < len(lines) else ""
        assert not after.startswith("--"), f"example broken across lines in `{command} --help`: {block + [after]}"
        words = shlex.split(" ".join(line.strip().rstrip("\\") for line in block))
        name = " ".join(w for w in words[1:3] if not w.startswith("-"))
        target = COMMANDS.get(name) or COMMANDS.get(words[1])
        assert target is not None, f"example names no command: {words}"
        known = {o for p in target.params for o in p.opts + p.secondary_opts}
        unknown = [w for w in words if w.startswith("--") and w not in known]
        assert not unknown, f"example in `{command} --help` uses options that do not exist: {unknown}"
    if command and command not in ("backbones", "pipelines", "data list"):
        assert _examples(text), f"`medclipsvd {command} --help` shows no example"


def test_top_level_summaries_are_one_line():
    text = _help("")
    commands = text[text.index("Commands"):]
    rows = [line for line in commands.splitlines() if line.startswith("│")]
    names = [row.split()[1] for row in rows if row[2] != " "]
    continuation = [row for row in rows if row[2] == " " and row.strip("│ ")]
    assert set(names) >= {"train", "evaluate", "benchmark", "demo", "interpret", "data"}
    assert not continuation, f"multi-line command summaries at 80 columns: {continuation}"


@pytest.mark.parametrize("command", ["backbones", "pipelines", "data list", "data list --layouts"])
def test_tables_fit_80_columns(command):
    result = CliRunner().invoke(app, command.split(), env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    too_wide = [line for line in lines if len(line) > 80 and not line.startswith("  ")]  # layout lines wrap softly
    assert not too_wide, too_wide
    body = [line for line in lines if line.startswith("│")]
    assert body and not [line for line in body if "…" in line], "truncated cells"  # nothing cut off


def test_demo_epilogue_says_what_the_numbers_mean_and_what_to_try(tmp_path):
    from medclipsvd.cli.engine import demo_epilogue

    text = demo_epilogue(tmp_path / "run")
    assert "plumbing" in text and "synthetic" in text and "random weights" in text
    commands = [" ".join(line.strip().rstrip("\\") for line in block) for block in _examples(text)]
    assert [c.split()[1] for c in commands][:2] == ["evaluate", "interpret"]
    for c in commands:  # every suggested command parses with the options it names
        words = shlex.split(c)
        known = {o for p in COMMANDS[words[1]].params for o in p.opts}
        assert all(w in known for w in words if w.startswith("--")), c
        assert str(tmp_path / "run" / "adapter") in c or "train" in c  # continuation lines joined
    from pathlib import Path

    # at the default --output every line fits 80 columns; a longer path folds on a line of its own
    assert all(len(line) <= 80 for line in demo_epilogue(Path("medclipsvd-demo") / "run").splitlines())
    assert all(len(line) <= 80 or len(line.rstrip("\\ ").split()) <= 2 for line in text.splitlines())


def test_old_dataset_spelling_still_works_and_warns(tmp_path):
    """`data check --dataset custom` (the old spelling) checks the same data as `--pipeline custom`, with a
    warning naming the new option; `--pipeline` also takes a pipeline name and checks its dataset."""
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "data" / cls / f"p{i}_{cls}.png")
    runner = CliRunner()
    root = str(tmp_path / "data")
    new = runner.invoke(app, ["data", "check", "--pipeline", "custom", "--data-root", root])
    with pytest.warns(FutureWarning, match="--dataset is deprecated; use --pipeline"):
        old = runner.invoke(app, ["data", "check", "--dataset", "custom", "--data-root", root])
    assert new.exit_code == old.exit_code and new.output == old.output
    assert "--dataset" not in _help("data check") and "--pipeline" in _help("data check")
    # a pipeline name resolves to its dataset: `demo` is custom data in a class-folder tree
    via_pipeline = runner.invoke(app, ["data", "check", "--pipeline", "demo", "--data-root", root])
    assert via_pipeline.exit_code == new.exit_code and via_pipeline.output == new.output


def test_dataset_of_resolves_pipelines_and_passes_dataset_names_through():
    assert options.dataset_of("breast_ultrasound")[0] == "BUSI"
    assert options.dataset_of("BUSI") == ("BUSI", {})


def test_help_texts_print_as_written():
    """Help is rendered as rich markup, where `[ray]` in an install hint is a style tag that vanishes: every
    bracketed word of every option's help must reach the printed --help (wide terminal: no wrapping)."""
    import re

    assert "pip install 'medclipsvd[ray]'" in " ".join(_wide_help("benchmark").split())
    for name, cmd in COMMANDS.items():
        text = " ".join(_wide_help(name).split())
        for p in cmd.params:
            if getattr(p, "hidden", False) or not getattr(p, "help", None):
                continue
            for tag in re.findall(r"\[[a-z][^\]\[]*\]", p.help.replace("\\[", "[")):
                assert tag in text, f"`medclipsvd {name} --help` lost {tag} from {p.opts[0]}'s help"


def _wide_help(command: str) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "400", "TERM": "dumb"},
                                terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


def test_readme_says_exactly_which_commands_take_which_common_option():
    """README's table of the common options lists, for each, exactly the commands whose --help shows it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `--")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0].strip("`")] = {c.strip().strip("`") for c in cells[-1].split(",")}
    assert set(table) >= set(SHARED), f"README's option table misses {set(SHARED) - set(table)}"
    for option, commands in table.items():
        actual = {name for name, cmd in COMMANDS.items() if option in _options(cmd)}
        assert commands == actual, (f"README says {option} is taken by {sorted(commands)}; the CLI: {sorted(actual)}")
