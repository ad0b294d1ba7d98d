"""The command line itself: help, version, which errors come first and what they name."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys

import pytest
import yaml

import factmem
from factmem import cli
from factmem.cli import build_parser, main

CONFIG = {"name": "c", "model": "unused", "stages": [
    {"dataset": "kvr", "size": 4, "stop": {"epochs": 1}},
    {"dataset": "kvr_id", "size": 4, "stop": {"epochs": 1}},
]}  # fmt: skip
UNKNOWN = "unknown field (check the spelling; `factmem fields` lists them all)"
SISE = f"factmem: error: --set stages[0].sise=3: stages.0.sise: {UNKNOWN}\n"  # one line


def _config(tmp_path, data: dict = CONFIG) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_help_describes_the_tool_and_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for words in ("Continual memorization of factoids", "memorised a set of factoids D_A",
                  "on another set D_B", "retention", "REMIX mixes random words"):  # fmt: skip
        assert words in " ".join(out.split()), words
    for command in _subcommands(build_parser()):
        assert f"\n    {command} " in out or f"\n    {command}\n" in out, command


def test_version_names_the_installed_distribution(capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"factmem {importlib.metadata.version('factmem')}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a source tree
    assert cli._version() == factmem.__version__


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, command in [("factmem", parser), *_subcommands(parser).items()]
        for action in command._actions
        if action.help != argparse.SUPPRESS and not action.help
    ]
    assert missing == []


@pytest.mark.parametrize("command", ["run", "grid"])
def test_a_mistyped_preset_is_refused_before_torch_is_imported(command, tmp_path):
    probe = ("import sys; from factmem.cli import main; "
             f"rc = main([{command!r}, 'nosuch']); "
             "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert done.stderr.count("\n") == 1 and "'nosuch'" in done.stderr
    if command == "run":
        assert "presets: default," in done.stderr


def test_a_wrong_key_given_to_run_is_blamed_on_its_flag(tmp_path, capsys):
    path = _config(tmp_path)
    assert main(["run", path, "--set", "stages[0].sise=3"]) == 2
    assert capsys.readouterr().err == SISE
    assert main(["run", path, "--set", "stages[0].training.lr=1e-3"]) == 2  # TrainingConfig's
    assert "--set stages[0].training.lr=1e-3: stages.0.training.lr: unknown field" in (
        capsys.readouterr().err)  # fmt: skip
    assert main(["run", path, "--set", "stages[0].size=abc"]) == 2  # a wrong value, too
    err = capsys.readouterr().err
    assert "  --set stages[0].size=abc: stages.0.size: Input should be a valid integer" in err
    assert path not in err
    assert main(["run", path, "--name", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "  --name a/b: name: 'a/b' is not a plain folder name" in err and path not in err


def test_a_wrong_key_in_the_file_is_still_blamed_on_its_line(tmp_path, capsys):
    data = json.loads(json.dumps(CONFIG))
    data["stages"][1]["sise"] = 3
    path = _config(tmp_path, data)
    assert main(["run", path, "--set", "stages[0].size=8"]) == 2
    assert f"  {path}:12: stages.1.sise: {UNKNOWN}" in capsys.readouterr().err


def test_a_wrong_key_given_to_grid_is_blamed_on_its_flag(tmp_path, capsys):
    _config(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: g\nbase: c.yaml\noutput_dir: {tmp_path / 'runs'}\n"
                    "axes: {seed: [0, 1]}\n")  # fmt: skip
    assert main(["grid", str(grid), "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["grid", str(grid), "--set", "stages[0].sise=3", "--dry-run"]) == 2
    assert capsys.readouterr().err == SISE
    assert main(["grid", str(grid), "--set", "mixing.ratio=2", "--status"]) == 2
    assert f"--set mixing.ratio=2: mixing: {UNKNOWN}" in capsys.readouterr().err
    assert main(["grid", str(grid), "--set", "stages[0].size=abc", "--dry-run"]) == 2
    err = capsys.readouterr().err  # a wrong value: the flag, not a run of the grid file
    assert err.startswith("factmem: error: --set stages[0].size=abc: ") and str(grid) not in err
    assert main(["grid", "nosuch"]) == 2
    assert "grid presets: " in capsys.readouterr().err  # what would have worked


def test_a_new_output_dir_beside_an_old_one_reuses_its_finished_stages(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """The README's `factmem run default --output-dir runs-b` after `factmem run default`."""
    import factmem.pipeline as pipeline
    from factmem.testing import tiny_config_data

    path = _config(tmp_path, tiny_config_data(tiny_model_dir, size=4, epochs=(1, 1)))
    monkeypatch.chdir(tmp_path)
    assert main(["run", path, "--output-dir", "runs", "--quiet"]) == 0

    def no_training(*args, **kwargs):
        raise AssertionError("a stage was trained again")

    monkeypatch.setattr(pipeline, "train_stage", no_training)
    assert main(["run", path, "--output-dir", "runs-b", "--quiet"]) == 0
    assert "| 2 stage2 | kvr_id (4) |" in capsys.readouterr().out
    for stage in ("stage1", "stage2"):
        record = json.loads((tmp_path / "runs-b" / "tiny" / stage / "training.json").read_text())
        assert record["shared_from"] == f"runs/tiny/{stage}"  # relative, as --output-dir was
