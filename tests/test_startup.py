"""Short commands stay light: ``glmdata --help`` and ``glmdata render --row 0`` on a small file must
not import torch, transformers or datasets (STYLE §7; their wall time is in bench/RESULTS.md).

Each command runs in a fresh interpreter, which runs the CLI and then reports the modules loaded:
imports only, never a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tool_row

HEAVY = ("torch", "transformers", "datasets")

# Runs the glmdata CLI as the console script does, then prints every module loaded by then.
PROBE = """
import sys
from glmdata.cli import main
sys.argv = ["glmdata", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
else:
    code = 0
sys.__stderr__.write("\\nMODULES=" + ",".join(sorted(sys.modules)) + "\\n")
sys.__stderr__.write(f"EXIT={code}\\n")
"""


def loaded_modules(*args: str) -> tuple[set[str], str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    modules = next((line[len("MODULES=") :] for line in lines if line.startswith("MODULES=")), None)
    code = next((line[len("EXIT=") :] for line in lines if line.startswith("EXIT=")), None)
    assert modules is not None, f"the probe did not finish: {result.stderr[-2000:]}"
    return set(modules.split(",")), code


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    glaive = {
        "conversations": [
            {"from": "human", "value": "北京天气怎么样？"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "get_weather", "arguments": {"location": "北京"}}, ensure_ascii=False),
            },
            {"from": "observation", "value": json.dumps({"temperature": 20})},
            {"from": "gpt", "value": "北京现在 20 度。"},
        ],
        "tools": json.dumps(
            [
                {
                    "name": "get_weather",
                    "description": "查询天气",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                }
            ],
            ensure_ascii=False,
        ),
    }
    path = tmp_path / "small.jsonl"
    path.write_text(
        "\n".join(json.dumps(row, ensure_ascii=False) for row in [glaive, tool_row(), glaive]) + "\n", encoding="utf-8"
    )
    return path


def test_probe_sees_heavy_imports():
    # The probe itself must be able to see a heavy import, or the tests below prove nothing.
    result = subprocess.run(
        [sys.executable, "-c", "import json, sys; import transformers; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.skip("transformers is not installed")
    assert "transformers" in heavy(set(json.loads(result.stdout)))


def test_help_imports_no_heavy_library():
    modules, code = loaded_modules("--help")
    assert code == "0"
    assert "glmdata.cli" in modules
    assert heavy(modules) == []


@pytest.mark.parametrize("command", ["convert", "validate", "render", "stats"])
def test_command_help_imports_no_heavy_library(command):
    modules, code = loaded_modules(command, "--help")
    assert code == "0"
    assert heavy(modules) == []


def test_render_row_imports_no_heavy_library(small_file):
    modules, code = loaded_modules("render", str(small_file), "--row", "0")
    assert code == "0"
    assert "glmdata.render" in modules and "glmdata.convert" in modules  # it did render
    assert heavy(modules) == []


def test_render_raw_row_imports_no_heavy_library(small_file):
    modules, code = loaded_modules("render", str(small_file), "--row", "1", "--raw")
    assert code == "0"
    assert heavy(modules) == []
