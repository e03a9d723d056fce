"""Glaive / ShareGPT rows: ``{"conversations": [{"from", "value"}], "tools"?, "system"?}``.

As in ``glaive_toolcall_zh_1k.json`` and LLaMA-Factory's glaive demos: ``from`` is human / gpt /
function_call / observation (/ system); ``tools`` is usually a JSON *string* of bare
``{name, description, parameters}`` tools; a ``function_call`` value is JSON text
``{"name": ..., "arguments": {...}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder
from glmdata.issues import validate
from glmdata.repairs import Fixer, canonical_role, normalize_tools

# The role names ShareGPT / Glaive files define (LLaMA-Factory's sharegpt tags).
NATIVE_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "function_call": "function_call",
    "observation": "observation",
    "system": "system",
}
SIGNATURE = '{"conversations": [{"from", "value"}], "tools"?, "system"?}'


class Turn(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_: str = Field(alias="from")
    value: str


class ShareGPTRow(BaseModel):
    """A Glaive / ShareGPT tool-call row."""

    model_config = ConfigDict(extra="ignore", title="Glaive / ShareGPT row")

    conversations: list[Turn] = Field(min_length=1)
    tools: str | list[Any] | None = Field(default=None, description="JSON string or list of tools")
    system: str | None = None


ADAPTER = TypeAdapter(ShareGPTRow)
MODEL = ShareGPTRow


def detect(row: dict) -> bool:
    turns = row.get("conversations", row.get("messages"))
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    if "conversations" not in row and "messages" in row:  # ShareGPT exports that name the list "messages"
        row = {**row, "conversations": row["messages"]}
    data = validate(ADAPTER, row)
    if data.tools is not None:  # absent (or null, already reported by null-fields): nothing to repair
        builder.add_tools(normalize_tools(data.tools, fx, "tools"), "tools")
    if data.system:
        builder.add("system", data.system)
    for i, turn in enumerate(data.conversations):
        # paths are formatted only where a repair or a rejection needs one: most turns need none
        role = NATIVE_ROLES.get(turn.from_) or canonical_role(turn.from_, fx, f"conversations[{i}].from", NATIVE_ROLES)
        if role == "function_call":
            fx.apply("function-call", f"conversations[{i}]", "function_call turn")
            builder.call_from_text(turn.value, f"conversations[{i}].value")
        elif role == "assistant":
            builder.add(role, turn.value, path=f"conversations[{i}].value")
        else:
            builder.add(role, turn.value)
