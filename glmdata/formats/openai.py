"""OpenAI-style chat rows: ``{"messages": [...], "tools"?}`` with assistant ``tool_calls`` and ``tool`` results.

Most modern datasets and API exports use this shape. Parallel calls (several ``tool_calls`` in one
assistant message) become consecutive GLM-4 turns, one call followed by its own observation::

    assistant(tool_calls=[A, B]), tool(A), tool(B)  ->  call A, observation A, call B, observation B

Results are matched to calls by ``tool_call_id`` (by position when ids are missing) and keep the
order in which the results arrive. A call that gets no result is emitted as a call with no
observation (which the checks report). Legacy ``function_call`` / ``functions`` are accepted too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder
from glmdata.issues import reject, validate
from glmdata.repairs import Fixer, call_arguments, canonical_role, normalize_tools

NATIVE_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "observation",
    "function": "observation",
}
SIGNATURE = '{"messages": [{"role", "content", "tool_calls"?, "tool_call_id"?}], "tools"?}'


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    tool_call_id: str | None = None
    name: str | None = None


class OpenAIRow(BaseModel):
    """An OpenAI-style chat row."""

    model_config = ConfigDict(extra="ignore", title="OpenAI-style chat row")

    messages: list[OpenAIMessage] = Field(min_length=1)
    tools: list[Any] | str | None = None
    functions: list[Any] | None = Field(default=None, description="legacy form of tools")


ADAPTER = TypeAdapter(OpenAIRow)
MODEL = OpenAIRow
_CALL_KEYS = ("tool_calls", "tool_call_id", "function_call")


def looks_openai(row: dict) -> bool:
    if "tools" in row or "functions" in row:
        return True
    for message in row["messages"]:
        if isinstance(message, dict) and (
            any(message.get(k) is not None for k in _CALL_KEYS)
            or isinstance(message.get("content"), list)
            or message.get("role") == "tool"
        ):
            return True
    return False


def detect(row: dict) -> bool:
    return isinstance(row.get("messages"), list) and looks_openai(row)


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    tools = data.tools if data.tools is not None else data.functions
    if tools is not None:  # absent (or null, already reported by null-fields): nothing to repair
        builder.add_tools(normalize_tools(tools, fx, "tools"), "tools")
    pending: list[tuple[str | None, str, dict, str]] = []  # (id, name, arguments, path) of unanswered calls

    def flush() -> None:
        for _, name, arguments, _ in pending:
            builder.call(name, arguments)
        pending.clear()

    for i, message in enumerate(data.messages):
        path = f"messages[{i}]"
        role = canonical_role(message.role, fx, f"{path}.role", NATIVE_ROLES)
        if role == "observation":
            if not pending:
                builder.add("observation", _text(message.content))
                continue
            at = next((k for k, call in enumerate(pending) if call[0] and call[0] == message.tool_call_id), 0)
            _, name, arguments, _ = pending.pop(at)
            builder.call(name, arguments)
            builder.add("observation", _text(message.content))
            continue
        flush()
        calls = list(message.tool_calls or [])
        if message.function_call is not None:
            calls.append(ToolCall(function=message.function_call))
        if role == "function_call":
            raise reject("bad-call", f"{path}.role", "role function_call in an OpenAI-style row: use tool_calls")
        text = _text(message.content)
        if text or not calls:
            builder.add(role, text, path=f"{path}.content")
        for k, call in enumerate(calls):
            call_path = f"{path}.tool_calls[{k}].function.arguments"
            fx.apply("function-call", f"{path}.tool_calls[{k}]", "tool call")
            arguments = call_arguments(call.function.arguments, fx, call_path, string_is_normal=True)
            pending.append((call.id, call.function.name, arguments, call_path))
    flush()
