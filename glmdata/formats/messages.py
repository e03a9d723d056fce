"""GLM-4 ``messages`` rows, the canonical format, read leniently so that real files can be repaired.

What arrives here is often a file written by ``datasets``/Arrow, where every message got every key
(``tools: null``, ``metadata: null``) and tools sit on the wrong message. The output model is
:class:`glmdata.models.Conversation`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder
from glmdata.issues import validate
from glmdata.models import Conversation
from glmdata.repairs import Fixer, call_arguments, canonical_role, normalize_tools

SIGNATURE = '{"messages": [{"role", "content", "tools"?, "metadata"?, "loss"?}]}'


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str
    tools: Any = None
    metadata: str | None = None
    loss: bool | None = None


class InputRow(BaseModel):
    model_config = ConfigDict(extra="ignore", title="GLM-4 messages row (input)")

    messages: list[InputMessage] = Field(min_length=1)
    tools: Any = None


ADAPTER = TypeAdapter(InputRow)
MODEL = Conversation


def detect(row: dict) -> bool:
    return isinstance(row.get("messages"), list)


def parse_json_call(content: str) -> tuple[str, Any] | None:
    """``(name, arguments)`` when the content is a JSON-style call ``{"name": ..., "arguments": ...}``."""
    if not content.startswith("{") or '"name"' not in content:
        return None
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and set(value) == {"name", "arguments"} and isinstance(value["name"], str):
        return value["name"], value["arguments"]
    return None


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
        if role == "function_call":
            fx.apply("function-call", path, "function_call message")
            builder.call_from_text(message.content, f"{path}.content", loss=message.loss)
            continue
        if role == "assistant":
            if message.metadata and builder.call_style == "json":
                fx.apply("call-style", path, "native call rewritten in json style")
                arguments = call_arguments(message.content, fx, f"{path}.content", string_is_normal=True)
                builder.call(message.metadata, arguments, loss=message.loss)
                continue
            if not message.metadata and builder.call_style == "native":
                call = parse_json_call(message.content)
                if call is not None:
                    fx.apply("call-style", path, "json-style call rewritten in native style")
                    name, arguments = call
                    builder.call(name, call_arguments(arguments, fx, f"{path}.content.arguments"), loss=message.loss)
                    continue
        builder.add(role, message.content, loss=message.loss, metadata=message.metadata)
