"""The benchmark workload: the real Glaive zh 1k rows, replicated with varied text to N rows.

Replica 0 is the original 1,000 rows, byte for byte in content. Replica k >= 1 changes every
human and gpt text and the description of every tool and tool parameter (a short suffix that
names k), and keeps everything that validity depends on (tool names, parameter names and types,
required lists, call arguments, observations). So the workload has the length distribution,
the defects (duplicates within a replica, observations after prose calls, undeclared argument
keys, the 62,926-character padded table) and the tool repetition rate of the real file: a tool
declaration repeats across replicas only if it repeats in the original, and caches keyed by
tool text get no free hits from the replication. ``repeat_tools=True`` keeps tools identical
across replicas instead (the cache-friendly case: a data set that reuses a few tool sets).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "glaive_toolcall_zh_1k.json"

# Varied text: a phrase chosen per (replica, row, turn), and the replica number, so no replica
# repeats another.
_HUMAN = ("请尽快回复", "谢谢", "麻烦了", "please", "拜托", "急用", "多谢帮忙", "thanks")
_GPT = ("希望对您有帮助", "如有需要请告诉我", "祝您愉快", "以上供参考", "hope this helps", "随时为您服务")


@dataclass(frozen=True)
class Workload:
    """Files of one workload, all holding the same rows."""

    rows: int
    json_array: Path  #: Glaive rows as a JSON array (indented, like the source file)
    jsonl: Path  #: the same rows, one compact JSON object per line
    source: Path


def load_source(path: Path = SOURCE) -> list[dict]:
    with open(path, "rb") as f:
        return orjson.loads(f.read())


def _vary_tools(tools: str, k: int) -> str:
    try:
        declared = json.loads(tools)
    except ValueError:
        return tools
    if not isinstance(declared, list) or not declared:
        return tools
    for function in declared:
        if not isinstance(function, dict):
            continue
        if isinstance(function.get("description"), str):
            function["description"] += f"（版本 {k}）"
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict):
            for schema in properties.values():
                if isinstance(schema, dict) and isinstance(schema.get("description"), str):
                    schema["description"] += f"（{k}）"
    return json.dumps(declared, ensure_ascii=False)


def vary(row: dict, k: int, index: int, *, repeat_tools: bool = False) -> dict:
    """Replica ``k`` of source row ``index`` (``k == 0``: the row itself)."""
    if k == 0:
        return row
    turns = []
    for t, turn in enumerate(row.get("conversations", [])):
        value = turn.get("value")
        if isinstance(value, str) and turn.get("from") in ("human", "gpt"):
            phrases = _HUMAN if turn["from"] == "human" else _GPT
            value = f"{value}（{phrases[(k * 7 + index * 3 + t) % len(phrases)]}，#{k}）"
            turn = {**turn, "value": value}
        turns.append(turn)
    out = {**row, "conversations": turns}
    if not repeat_tools and isinstance(row.get("tools"), str):
        out["tools"] = _vary_tools(row["tools"], k)
    return out


def replicated(n: int, source: list[dict], *, repeat_tools: bool = False) -> Iterator[dict]:
    """The first ``n`` rows of replicas 0, 1, 2, ... of ``source``."""
    produced = 0
    k = 0
    while produced < n:
        for index, row in enumerate(source):
            if produced >= n:
                return
            yield vary(row, k, index, repeat_tools=repeat_tools)
            produced += 1
        k += 1


def write_files(
    n: int, directory: Path, *, repeat_tools: bool = False, json_array: bool = True, source_path: Path = SOURCE
) -> tuple[Path, Path | None]:
    """Write ``n`` replicated rows of ``source_path`` as ``glaive_N.jsonl`` and (optionally)
    ``glaive_N.json``, streaming (constant memory, so it scales to millions of rows). Returns both
    paths."""
    source = load_source(source_path)
    directory.mkdir(parents=True, exist_ok=True)
    jsonl_path = directory / f"glaive_{n}.jsonl"
    array_path = directory / f"glaive_{n}.json" if json_array else None
    with open(jsonl_path, "wb") as jl:
        array = open(array_path, "wb") if array_path else None  # noqa: SIM115 - closed below
        try:
            if array:
                array.write(b"[\n")
            for i, row in enumerate(replicated(n, source, repeat_tools=repeat_tools)):
                jl.write(orjson.dumps(row) + b"\n")
                if array:
                    if i:
                        array.write(b",\n")
                    array.write(orjson.dumps(row, option=orjson.OPT_INDENT_2))
            if array:
                array.write(b"\n]\n")
        finally:
            if array:
                array.close()
    return jsonl_path, array_path


def build(n: int, directory: Path, *, repeat_tools: bool = False, source_path: Path = SOURCE) -> Workload:
    """Write the workload of ``n`` rows of ``source_path`` into ``directory``."""
    jsonl_path, array_path = write_files(n, directory, repeat_tools=repeat_tools, source_path=source_path)
    assert array_path is not None
    return Workload(n, array_path, jsonl_path, source_path)


def average_row_bytes(path: Path) -> float:
    with open(path, "rb") as f:
        return path.stat().st_size / max(1, sum(1 for _ in f))
