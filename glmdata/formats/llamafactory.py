"""LLaMA-Factory's multi-part rows (its v1 data engine, the reasoning tool-use demos):
``{"messages": [{"role", "content": [{"type": "text"|"reasoning"|"tool_call", "value": str}],
"loss_weight"?}], "tools"?: str}``.

Read as LLaMA-Factory 0.9.5 reads them (``v1/plugins/model_plugins/templates/qwen3.py``): the
``text`` parts of a message are joined, and so are its ``reasoning`` parts; a ``tool_call`` part's
value is JSON ``{"name", "arguments"}`` (arguments an object, or JSON text); a system, user or tool
message holds text parts only. Roles are system / user / assistant / tool; tool results answer the
calls before them by position. So one assistant message [reasoning, text, call A, call B] becomes
the GLM-4 turns ``assistant(text, reasoning)``, ``call A``, its result, ``call B``, its result, as
OpenAI's parallel calls do (the reasoning on the first message of the turn). ``loss_weight`` 0 or 1
is the message's ``loss`` where it differs from the role's default (LLaMA-Factory's defaults are
glmdata's: the assistant's turns are trained); a weight in between has no GLM-4 equivalent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder, misplaced_reasoning
from glmdata.formats.openai import NATIVE_ROLES, Chat
from glmdata.issues import reject, validate
from glmdata.repairs import Fixer, canonical_role, loads_lenient, normalize_tools

SIGNATURE = '{"messages": [{"role", "content": [{"type": "text"|"reasoning"|"tool_call", "value"}]}], "tools"?}'


class Part(BaseModel):
    """One part of a message's content."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "reasoning", "tool_call"] = Field(
        description='text; the reasoning before it; a tool call, its value JSON {"name", "arguments"}'
    )
    value: str


class LlamaFactoryMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str = Field(description="system, user, assistant or tool")
    content: list[Part] | str
    loss_weight: float | None = Field(default=None, description="0 or 1: trained or not")


class LlamaFactoryRow(BaseModel):
    """A LLaMA-Factory multi-part messages row."""

    model_config = ConfigDict(extra="ignore", title="LLaMA-Factory multi-part messages row")

    messages: list[LlamaFactoryMessage] = Field(min_length=1)
    tools: list[Any] | str | None = Field(default=None, description="JSON string (or list) of tools")


ADAPTER = TypeAdapter(LlamaFactoryRow)
MODEL = LlamaFactoryRow


def detect(row: dict) -> bool:
    """A ``messages`` row whose first message with list content has ``value`` parts."""
    messages = row.get("messages")
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and content:
            return isinstance(content[0], dict) and "value" in content[0] and "text" not in content[0]
    return False


def _loss(weight: float | None, role: str, path: str) -> bool | None:
    if weight is None:
        return None
    if weight not in (0, 1):
        raise reject(
            "schema",
            f"{path}.loss_weight",
            f"loss_weight {weight!r}: GLM-4 training trains a message or not; give 0 or 1",
        )
    trained = bool(weight)
    return None if trained == (role == "assistant") else trained


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    if data.tools is not None:
        builder.add_tools(normalize_tools(data.tools, fx, "tools"), "tools")
    chat = Chat(fx, builder)
    for i, message in enumerate(data.messages):
        path = f"messages[{i}]"
        role = canonical_role(message.role, fx, f"{path}.role", NATIVE_ROLES)
        if role == "function_call":
            raise reject("bad-call", f"{path}.role", f"role {message.role!r}: write calls as tool_call parts")
        loss = _loss(message.loss_weight, role, path)
        if isinstance(message.content, str):
            chat.message(i, role, message.content, loss=loss)
            continue
        texts: list[str] = []
        reasonings: list[str] = []
        calls: list[tuple[str | None, str, Any, str, str]] = []
        text_path = ""
        for k, part in enumerate(message.content):
            where = f"{path}.content[{k}]"
            if part.type == "text":
                texts.append(part.value)
                text_path = text_path or f"{where}.value"
            elif role != "assistant":
                if part.type == "reasoning":
                    raise misplaced_reasoning(role, where)
                raise reject("bad-call", where, f"a tool_call part in a {role} message; only the assistant calls tools")
            elif part.type == "reasoning":
                reasonings.append(part.value)
            else:
                calls.append(_call(part.value, fx, where))
        reasoning = "".join(reasonings) or None
        chat.message(
            i,
            role,
            "".join(texts),
            calls=calls,
            reasoning=reasoning,
            text_path=text_path if len(texts) == 1 else f"{path}.content",
            loss=loss,
            string_arguments=False,
        )
    chat.flush()


def _call(value: str, fx: Fixer, path: str) -> tuple[None, str, Any, str, str]:
    """A ``tool_call`` part: (no id, name, arguments as given, where, where its arguments are)."""
    try:
        call = loads_lenient(value, fx, f"{path}.value")
    except ValueError as exc:
        raise reject("bad-call", f"{path}.value", f"tool_call value is not JSON: {exc}") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise reject("bad-call", f"{path}.value", 'tool_call value has no string "name"; write {"name", "arguments"}')
    return None, call["name"], call.get("arguments", {}), path, f"{path}.value.arguments"
