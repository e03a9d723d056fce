"""GLM-4 ``messages`` rows, the canonical format, read leniently so that real files can be repaired.

What arrives here is often a file written by ``datasets``/Arrow, where every message got every key
(``tools: null``, ``metadata: null``) and tools sit on the wrong message. The output model is
:class:`glmdata.models.Conversation`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder, misplaced_reasoning, one_reasoning
from glmdata.issues import validate
from glmdata.models import Conversation
from glmdata.repairs import Fixer, canonical_role, normalize_tools, parse_json_call  # noqa: F401 - parse_json_call re-exported

SIGNATURE = '{"messages": [{"role", "content", "tools"?, "metadata"?, "reasoning"?, "loss"?}]}'


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str
    tools: Any = None
    metadata: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None  # as glm-4.5 rows name it
    loss: bool | None = None


class InputRow(BaseModel):
    model_config = ConfigDict(extra="ignore", title="GLM-4 messages row (input)")

    messages: list[InputMessage] = Field(min_length=1)
    tools: Any = None


ADAPTER = TypeAdapter(InputRow)
MODEL = Conversation


def detect(row: dict) -> bool:
    return isinstance(row.get("messages"), list)


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    if data.tools is not None:
        builder.add_tools(normalize_tools(data.tools, fx, "tools"), "tools")
    for i, message in enumerate(data.messages):
        path = f"messages[{i}]"
        role = canonical_role(message.role, fx, f"{path}.role")
        if message.tools is not None:
            tools = normalize_tools(message.tools, fx, f"{path}.tools")
            if tools and role != "system":
                fx.apply("tools-to-system", f"{path}.tools", f"tools on a {role} message")
            builder.add_tools(tools, f"{path}.tools")
        reasoning = None
        if message.reasoning is not None or message.reasoning_content is not None:
            reasoning, where = one_reasoning(
                [(f"{path}.reasoning", message.reasoning), (f"{path}.reasoning_content", message.reasoning_content)]
            )
            if reasoning is not None and role not in ("assistant", "function_call"):
                raise misplaced_reasoning(role, where)
        if role == "function_call":
            fx.apply("function-call", path, "function_call message")
            builder.call_from_text(message.content, f"{path}.content", loss=message.loss, reasoning=reasoning)
            continue
        builder.add(
            role,
            message.content,
            loss=message.loss,
            metadata=message.metadata,
            path=f"{path}.content",
            reasoning=reasoning,
        )
