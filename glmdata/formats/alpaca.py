"""Alpaca rows: ``{"instruction", "input"?, "output", "system"?, "history"?}``.

The user turn is the instruction, then ``"\\n\\n"`` and the input when the input is not empty (the
rule the GLM-4 Alpaca tutorial uses); ``history`` pairs ``[user, assistant]`` become earlier turns.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder
from glmdata.issues import validate
from glmdata.repairs import Fixer

SIGNATURE = '{"instruction", "input"?, "output", "system"?, "history"?}'


class AlpacaRow(BaseModel):
    """An Alpaca instruction row."""

    model_config = ConfigDict(extra="ignore", title="Alpaca row")

    instruction: str
    input: str = ""
    output: str
    system: str | None = None
    history: list[tuple[str, str]] = Field(default_factory=list, description="earlier [user, assistant] pairs")


ADAPTER = TypeAdapter(AlpacaRow)
MODEL = AlpacaRow


def detect(row: dict) -> bool:
    return "instruction" in row and "output" in row


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    if data.system:
        builder.add("system", data.system)
    for k, (user, assistant) in enumerate(data.history):
        builder.add("user", user)
        builder.add("assistant", assistant, path=f"history[{k}][1]")
    user = f"{data.instruction}\n\n{data.input}" if data.input else data.instruction
    builder.add("user", user)
    builder.add("assistant", data.output, path="output")
