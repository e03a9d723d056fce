"""Rebuild the samples in data/ from the real datasets in ../shared/data (run from the repo root).

Rows are copied verbatim where the format exists in the real data; the ChatGLM3, OpenAI-style and
Arrow-null samples are derived from Glaive rows by the rules written below (no text is invented).
"""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(__file__).resolve().parent

GLAIVE_ROWS = [*range(0, 16), 64, 121, 143, 146, 150, 624, 655, 783]


def dump_array(rows: list, name: str) -> None:
    (DATA / name).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def dump_jsonl(rows: list, name: str) -> None:
    (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _calls(row: dict):
    """Glaive turns with function_call values parsed."""
    for turn in row["conversations"]:
        value = json.loads(turn["value"]) if turn["from"] == "function_call" else turn["value"]
        yield turn["from"], value


def to_chatglm3(row: dict) -> dict:
    """ChatGLM3 finetune-demo shape: tools list, tool turns {name, parameters, observation}."""
    out: list[dict] = []
    for role, value in _calls(row):
        if role == "function_call":
            out.append({"role": "tool", "name": value["name"], "parameters": value["arguments"]})
        elif role == "observation" and out and out[-1]["role"] == "tool":
            out[-1]["observation"] = value
        else:
            out.append({"role": {"human": "user", "gpt": "assistant"}.get(role, role), "content": value})
    return {"tools": json.loads(row["tools"]), "conversations": out}


def to_openai(row: dict) -> dict:
    """OpenAI chat shape: tools as {type, function}, assistant tool_calls, tool results by id."""
    messages: list[dict] = []
    n = 0
    for role, value in _calls(row):
        if role == "function_call":
            n += 1
            call = {
                "id": f"call_{n}",
                "type": "function",
                "function": {"name": value["name"], "arguments": json.dumps(value["arguments"], ensure_ascii=False)},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif role == "observation":
            messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": value})
        else:
            messages.append({"role": {"human": "user", "gpt": "assistant"}[role], "content": value})
    tools = [{"type": "function", "function": t} for t in json.loads(row["tools"])]
    return {"messages": messages, "tools": tools}


def to_arrow_messages(rows: list[dict]) -> list[dict]:
    """GLM-4 messages with every key on every message, null where absent: what a JSONL written
    through datasets/Arrow looks like (GLM-4 issue #576)."""
    out = []
    for row in rows:
        messages = []
        tools = [{"type": "function", "function": t} for t in json.loads(row["tools"])] or None
        if tools:
            messages.append({"role": "system", "content": "", "tools": tools, "metadata": None})
        for role, value in _calls(row):
            if role == "function_call":
                messages.append(
                    {
                        "role": "assistant",
                        "content": json.dumps(value["arguments"], ensure_ascii=False),
                        "tools": None,
                        "metadata": value["name"],
                    }
                )
            else:
                messages.append(
                    {
                        "role": {"human": "user", "gpt": "assistant"}.get(role, role),
                        "content": value,
                        "tools": None,
                        "metadata": None,
                    }
                )
        out.append({"messages": messages})
    return out


def main() -> None:
    glaive = json.loads((SHARED / "data/glaive_toolcall_zh_1k.json").read_text(encoding="utf-8"))
    dump_array([glaive[i] for i in GLAIVE_ROWS], "glaive_toolcall_zh_sample.json")
    tool_rows = [glaive[i] for i in (0, 1, 2, 4, 6)]
    dump_array([to_chatglm3(r) for r in tool_rows] + [to_chatglm3(glaive[3])], "chatglm3_toolcall_sample.json")
    dump_jsonl([to_openai(r) for r in tool_rows + [glaive[3]]], "openai_toolcall_sample.jsonl")
    dump_jsonl(to_arrow_messages(tool_rows + [glaive[3]]), "messages_arrow_nulls_sample.jsonl")
    for name, take in (("alpaca_zh_demo", 20), ("alpaca_en_demo", 20), ("identity", 8)):
        rows = json.loads((SHARED / f"data/llamafactory/{name}.json").read_text(encoding="utf-8"))
        dump_array(rows[:take], f"{name.replace('_demo', '')}_sample.json")
    lines = (
        (SHARED / "reference/glm4_finetune_demo/data/AdvertiseGen_dev.jsonl").read_text(encoding="utf-8").splitlines()
    )
    (DATA / "advertisegen_messages_sample.jsonl").write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
