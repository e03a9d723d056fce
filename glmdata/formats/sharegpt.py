"""Glaive / ShareGPT rows: ``{"conversations": [{"from", "value"}], "tools"?, "system"?}``.

As in ``glaive_toolcall_zh_1k.json`` and LLaMA-Factory's glaive demos: ``from`` is human / gpt /
function_call / observation (/ system); ``tools`` is usually a JSON *string* of bare
``{name, description, parameters}`` tools; a ``function_call`` value is JSON text
``{"name": ..., "arguments": {...}}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter
from typing_extensions import NotRequired, TypedDict

from glmdata.builder import THINK_OPEN, MessagesBuilder
from glmdata.issues import validate
from glmdata.repairs import JSON_CALL_START, Fixer, canonical_role, normalize_tools

# The role names ShareGPT / Glaive files define (LLaMA-Factory's sharegpt tags).
NATIVE_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "function_call": "function_call",
    "observation": "observation",
    "system": "system",
}
SIGNATURE = '{"conversations": [{"from", "value"}], "tools"?, "system"?}'


# TypedDicts, not models: Pydantic validates them into plain dicts, without building an object
# per turn (about half the cost for a Glaive row); the JSON Schema is the same but for the
# `"default": null` of tools and system, which a TypedDict does not state (absent means none).
Turn = TypedDict("Turn", {"from": str, "value": str}, total=True)
Turn.__pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[attr-defined]


class ShareGPTRow(TypedDict):
    """A Glaive / ShareGPT tool-call row."""

    __pydantic_config__ = ConfigDict(extra="ignore", title="Glaive / ShareGPT row")  # type: ignore[misc]

    conversations: Annotated[list[Turn], Field(min_length=1)]
    tools: NotRequired[Annotated[str | list[Any] | None, Field(description="JSON string or list of tools")]]
    system: NotRequired[str | None]


ADAPTER = TypeAdapter(ShareGPTRow)
MODEL = ShareGPTRow


def _plainly_valid(row: dict) -> bool:
    """True when ``ADAPTER`` certainly accepts ``row`` as it is (parsed JSON: exact types), and
    its validated copy would read the same: sparing the usual row a Pydantic round (3 µs);
    otherwise Pydantic validates, and says what is wrong where."""
    turns = row.get("conversations")
    if type(turns) is not list or not turns:
        return False
    try:
        for turn in turns:
            if type(turn) is not dict or type(turn["from"]) is not str or type(turn["value"]) is not str:
                return False
    except KeyError:
        return False
    tools, system = row.get("tools"), row.get("system")
    return (tools is None or type(tools) is str or type(tools) is list) and (system is None or type(system) is str)


def detect(row: dict) -> bool:
    turns = row.get("conversations", row.get("messages"))
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    if "conversations" not in row and "messages" in row:  # ShareGPT exports that name the list "messages"
        row = {**row, "conversations": row["messages"]}
    data = row if _plainly_valid(row) else validate(ADAPTER, row)
    tools = data.get("tools")
    if tools is not None:  # absent (or null, already reported by null-fields): nothing to repair
        builder.add_tools(normalize_tools(tools, fx, "tools"), "tools")
    if data.get("system"):
        builder.add("system", data["system"])
    for i, turn in enumerate(data["conversations"]):
        # paths are formatted only where a repair or a rejection needs one: most turns need none
        source, value = turn["from"], turn["value"]
        role = NATIVE_ROLES.get(source) or canonical_role(source, fx, f"conversations[{i}].from", NATIVE_ROLES)
        if role == "function_call":
            fx.apply("function-call", f"conversations[{i}]", "function_call turn")
            builder.call_from_text(value, f"conversations[{i}].value")
        elif role == "assistant" and (value[:1] == JSON_CALL_START or THINK_OPEN in value):
            # it may be a call written as JSON (call-style), or start with <think> (think-tags)
            builder.add(role, value, path=f"conversations[{i}].value")
        else:
            builder.add_text(role, value)
