"""Shared paths, fixtures and helpers for the test suite.

``DATA`` holds the samples shipped with the repository; ``SHARED`` the real datasets next to the
checkout (``../shared``), which CI has: tests that need it skip cleanly where it is absent.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED = Path(os.environ.get("GLMDATA_SHARED", REPO.parent / "shared"))  # GLMDATA_SHARED=/nowhere: as without it
SHARED_DATA = SHARED / "data"
GOLDEN = REPO / "tests" / "golden"


def shared_file(relative: str) -> Path:
    """A file under ``../shared/data``; skips the calling test when it is not there."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is not there (CI has it)")
    return path


# ---------------------------------------------------------------------------------------- rows


def tool(
    name: str = "get_weather", properties: dict | None = None, required: list[str] | None = None, description: str = ""
) -> dict:
    """A canonical ``{"type": "function", "function": {...}}`` tool."""
    properties = {"location": {"type": "string", "description": "city"}} if properties is None else properties
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    parameters["required"] = list(properties) if required is None else required
    return {
        "type": "function",
        "function": {"name": name, "description": description or f"{name} tool", "parameters": parameters},
    }


def msg(role: str, content: str, **extra: Any) -> dict:
    return {"role": role, "content": content, **extra}


def call(name: str = "get_weather", arguments: Any = None) -> dict:
    """A native GLM-4 tool call message."""
    arguments = {"location": "Beijing"} if arguments is None else arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"role": "assistant", "content": text, "metadata": name}


def tool_row(*tools: dict) -> dict:
    """A clean GLM-4 messages row with one call, its observation and a final answer."""
    tools = tools or (tool(),)
    return {
        "messages": [
            {"role": "system", "content": "", "tools": list(tools)},
            msg("user", "What is the weather in Beijing?"),
            call(),
            msg("observation", '{"temperature": 20}'),
            msg("assistant", "It is 20 degrees in Beijing."),
        ]
    }


def chat_row(*turns: str) -> dict:
    """A clean user/assistant messages row."""
    turns = turns or ("hello", "hi, how can I help?")
    return {"messages": [msg("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(turns)]}


def codes(result: Any) -> list[str]:
    """The issue codes of a Result, in order."""
    return [issue.code for issue in result.issues]


def repair_names(result: Any) -> list[str]:
    return [name for name, _ in result.repairs]


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def runner():
    """typer's CliRunner; ``result.stdout`` and ``result.stderr`` are kept apart."""
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(name, content)`` -> path in tmp_path. ``content`` is bytes, text, or rows: a list is
    written as a JSON array (``.json``) or JSONL (anything else); ``.gz`` names are gzipped."""

    def _write(name: str, content: bytes | str | Iterable[Any]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes):
            data = content
        else:
            rows = list(content)
            plain = name[:-3] if name.endswith(".gz") else name
            if plain.endswith(".json"):
                data = json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8")
            else:
                data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        if name.endswith(".gz"):
            data = gzip.compress(data)
        path.write_bytes(data)
        return path

    return _write


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def json_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) in a JSON value, the root () first."""
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += json_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += json_paths(item, (*path, i))
    return out


def edit_at(value: Any, path: tuple, new: Any, delete: bool) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced by ``new`` (or deleted)."""
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    if delete and len(path) == 1:
        del copy[path[0]]
    else:
        copy[path[0]] = edit_at(value[path[0]], path[1:], new, delete)
    return copy
