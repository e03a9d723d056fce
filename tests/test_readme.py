"""The README is the front door: its set-up commands, commands, flags and tables must match the
code, so the docs cannot drift (STYLE §5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glmdata.cli import app as glmdata_app
from glmdata.issues import CODES
from glmdata.repairs import REPAIRS
from glmtrain.cli import app as glmtrain_app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
APPS = {"glmdata": glmdata_app, "glmtrain": glmtrain_app}


def _commands(app) -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


def _help(tool: str, *command: str) -> str:
    result = CliRunner().invoke(APPS[tool], [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def _all_flags() -> set[str]:
    flags = set()
    for tool, app in APPS.items():
        for command in ("", *_commands(app)):
            flags |= set(re.findall(r"--[a-z][a-z0-9-]*", _help(tool, *([command] if command else []))))
    return flags


def _code_blocks() -> list[str]:
    return re.findall(r"```(?:bash|sh)?\n(.*?)```", README, flags=re.S)


def test_setup_commands_come_first_and_ci_runs_the_test_command() -> None:
    blocks = _code_blocks()
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "glmdata convert data/" in main_job and main_job.endswith("glmdata render --row 0")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == tests
    assert tests.index("pip install -q torch==2.13.0") < tests.index('pip install -q -e ".[train,test]"')
    assert tests.endswith("&& pytest")


def test_the_three_commands_are_shown_as_users_type_them() -> None:
    for line in (
        "glmdata convert glaive.json -o messages.jsonl",
        "glmdata render --row 0",
        "glmtrain run messages.jsonl",
    ):
        assert line in README


@pytest.mark.parametrize("tool", sorted(APPS))
def test_every_command_the_readme_names_exists(tool: str) -> None:
    code = "\n".join(_code_blocks() + re.findall(r"`([^`\n]+)`", README))
    named = set(re.findall(rf"(?<![\w./-]){tool} ([a-z][a-z-]+)", code))
    assert named, tool
    assert named <= set(_commands(APPS[tool])), named - set(_commands(APPS[tool]))


def test_every_flag_the_readme_names_exists() -> None:
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    # flags of other tools the README shows (pip, accelerate, torchrun)
    flags -= {"--config_file", "--nproc", "--num", "--multi", "--standalone", "--cpu"}
    missing = flags - _all_flags()
    assert not missing, f"README names flags no command has: {sorted(missing)}"


def test_every_repair_and_check_is_in_the_readme_tables() -> None:
    for name in REPAIRS:
        assert f"`{name}`" in README, f"repair {name} is not in the README"
    for code in CODES:
        assert f"`{code}`" in README, f"check code {code} is not in the README"
