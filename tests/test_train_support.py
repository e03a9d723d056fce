"""Shared pieces of the glmtrain tests (no tests here): rows, the tiny model, CLI helpers.

The tiny model is glmtrain's own ``tiny-random`` preset: a 2-layer random ``GlmForCausalLM`` and a
byte-level tokenizer with GLM-4's special ids, built once per session into a temporary cache.
Rows are short English conversations so that CPU steps stay fast (the vocabulary is GLM-4's 151552).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tool_call_row(city: str, temp: int) -> dict:
    """A native GLM-4 tool call, its observation and the answer."""
    return {
        "messages": [
            {"role": "system", "content": "", "tools": [WEATHER]},
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "metadata": "get_weather", "content": json.dumps({"city": city})},
            {"role": "observation", "content": json.dumps({"temp": temp})},
            {"role": "assistant", "content": f"{temp} degrees in {city}."},
        ]
    }


def chat_row(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


CHAT_ROWS = [
    chat_row("hi", "hello there"),
    chat_row("2+2?", "4"),
    chat_row("capital of France?", "Paris"),
    chat_row("colour of the sky?", "blue"),
    chat_row("say yes", "yes"),
    chat_row("opposite of up?", "down"),
]
TRAIN_ROWS = CHAT_ROWS + [tool_call_row("Paris", 21), tool_call_row("Oslo", 3)]
EVAL_ROWS = [tool_call_row("Rome", 25)]
# a row glmdata rejects: an observation with no tool call before it
INVALID_ROW = {
    "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "let me check"},
        {"role": "observation", "content": '{"temp": 1}'},
        {"role": "assistant", "content": "1 degree"},
    ]
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def glmtrain_env(tmp_path_factory) -> dict[str, str]:
    """Environment for glmtrain in tests: a private preset cache, no SwanLab login, no hub."""
    root = tmp_path_factory.mktemp("glmtrain_env")
    env = {
        "GLMTRAIN_CACHE": str(root / "cache"),
        "SWANLAB_ROOT": str(root / "swanlab_home"),  # no saved login: --tracker auto means offline
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("SWANLAB_API_KEY", None)
    os.environ.pop("SWANLAB_MODE", None)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model_dir(glmtrain_env) -> Path:
    from glmtrain.tiny import ensure_preset

    return ensure_preset("tiny-random")


def glmtrain_cli(*args: str):
    """Run the command in-process; returns typer's Result (``stdout``, ``stderr``, ``exit_code``)."""
    from typer.testing import CliRunner

    from glmtrain.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def glmtrain_subprocess(
    *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """``python -m glmtrain ...`` in a fresh interpreter (for import checks and the offline hub)."""
    return subprocess.run(
        [sys.executable, "-m", "glmtrain", *map(str, args)],
        cwd=REPO,
        check=False,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tokenizer_only(tiny_model_dir, tmp_path) -> Path:
    """The tiny model's tokenizer without its weights or model config: a run that got as far as
    loading them would fail."""
    target = tmp_path / "tokenizer_only"
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, target / name)
    return target
