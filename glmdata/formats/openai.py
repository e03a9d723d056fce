"""OpenAI-style chat rows: ``{"messages": [...], "tools"?}`` with assistant ``tool_calls`` and ``tool`` results.

Most modern datasets and API exports use this shape. Parallel calls (several ``tool_calls`` in one
assistant message) become consecutive GLM-4 turns, one call followed by its own observation::

    assistant(tool_calls=[A, B]), tool(A), tool(B)  ->  call A, observation A, call B, observation B

Results keep the order in which they arrive. When any result of a group (the tool messages right
after one assistant message) has a ``tool_call_id``, every result is matched by id: an id that names
no call of that message, or a call answered twice, rejects the row (``unmatched-tool-result``), and
so does a result without an id, unless it is the only one and exactly one call is left for it. When
no result has an id they are matched by position. A call that gets no result is emitted as a call
with no observation (which the checks report). Tools on a message (some exports put them on the
system message) are the row's tools, merged with the top-level ones (identical tools once).
Legacy ``function_call`` / ``functions`` are accepted too.
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
_TOOL_ROLES = ("tool", "function")
_GLM_FIELDS = (("metadata", str), ("loss", bool))


def signals(row: dict, every: bool = True) -> tuple[list[str], list[str], bool]:
    """For a row with a ``messages`` list: the fields that only OpenAI rows write, and those that
    only GLM-4 messages rows write (``metadata``, ``loss``), up to the first OpenAI one unless
    ``every`` (``to_messages`` refuses GLM-4 fields further on); and whether the row has what OpenAI
    rows usually have but the messages reader accepts too (top-level ``tools``, a ``tool`` role)."""
    openai = ["functions"] if "functions" in row else []
    glm: list[str] = []
    weak = "tools" in row
    for i, message in enumerate(row["messages"]):
        if openai and not every:
            break
        if not isinstance(message, dict):
            continue
        if "metadata" in message or "loss" in message:
            glm += [f"messages[{i}].{k}" for k, t in _GLM_FIELDS if isinstance(message.get(k), t)]
        for key in _CALL_KEYS:
            if message.get(key) is not None:
                openai.append(f"messages[{i}].{key}")
        if isinstance(message.get("content"), list):
            openai.append(f"messages[{i}].content")
        if not weak and message.get("role") in _TOOL_ROLES:
            weak = True
    return openai, glm, weak


def mixed(row: dict) -> str | None:
    """What to say about a row with fields of GLM-4 messages rows read as OpenAI; None if it has none."""
    openai, glm, _ = signals(row)
    if not glm:
        return None
    a, b = (", ".join(seen[:4]) + (f" and {len(seen) - 4} more" if len(seen) > 4 else "") for seen in (openai, glm))
    seen = (
        f"openai fields ({a}) and messages fields ({b})" if openai else f"messages fields ({b}) in a row read as openai"
    )
    return (
        f"the row mixes two formats: {seen}; write it in one of them: calls as tool_calls answered by tool "
        "results, or as assistant messages with metadata answered by observations"
    )


def detect(row: dict) -> bool:
    if not isinstance(row.get("messages"), list):
        return False
    openai, glm, weak = signals(row, every=False)
    return not glm and (bool(openai) or weak)


def _text(content: str | list[TextPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def _pair(calls: list[tuple[str | None, str, dict]], results: list[tuple[int, OpenAIMessage]], at: str) -> list[int]:
    """Index of the call each result answers (-1: none, a result beyond the calls): by
    ``tool_call_id`` when any result has one, else by position."""
    if len(results) == 1 and results[0][1].tool_call_id in (None, calls[0][0]):
        return [0]
    if all(message.tool_call_id is None for _, message in results):
        return [k if k < len(calls) else -1 for k in range(len(results))]
    taken = [False] * len(calls)
    order = []
    for i, message in results:
        cid = message.tool_call_id
        k = -1 if cid is None else next((k for k, c in enumerate(calls) if c[0] == cid and not taken[k]), -2)
        if k == -2:
            ids = ", ".join(repr(c[0]) for c in calls if c[0] is not None) or "none"
            what = "answers a call already answered" if any(c[0] == cid for c in calls) else "names no call"
            raise reject(
                "unmatched-tool-result",
                f"messages[{i}].tool_call_id",
                f"tool_call_id {cid!r} {what} of {at} (its call ids: {ids}); give each result the id of its own call",
            )
        if k >= 0:
            taken[k] = True
        order.append(k)
    if -1 in order:
        left = [k for k, done in enumerate(taken) if not done]
        if order.count(-1) > 1 or len(left) != 1:
            i = results[order.index(-1)][0]
            raise reject(
                "unmatched-tool-result",
                f"messages[{i}].tool_call_id",
                f"no tool_call_id, while other results of the calls of {at} have one and {len(left)} calls are "
                "left unanswered; give it the id of the call it answers",
            )
        order[order.index(-1)] = left[0]
    return order


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    tools = data.tools if data.tools is not None else data.functions
    if tools is not None:  # absent (or null, already reported by null-fields): nothing to repair
        builder.add_tools(normalize_tools(tools, fx, "tools"), "tools")
    calls: list[tuple[str | None, str, dict]] = []  # (id, name, arguments) of the last assistant message
    results: list[tuple[int, OpenAIMessage]] = []  # the tool results right after it
    at = ""

    def flush() -> None:
        order = _pair(calls, results, at) if results else []
        for (_, message), k in zip(results, order):
            if k >= 0:
                builder.call(calls[k][1], calls[k][2])
            builder.add("observation", _text(message.content))
        for k, (_, name, arguments) in enumerate(calls):
            if k not in order:
                builder.call(name, arguments)
        calls.clear()
        results.clear()

    raw = row["messages"]
    for i, message in enumerate(data.messages):
        path = f"messages[{i}]"
        role = canonical_role(message.role, fx, f"{path}.role", NATIVE_ROLES)
        extra = raw[i]  # keys the model does not read: OpenAI rows have no tools on a message, nor metadata
        if "metadata" in extra or "loss" in extra:
            for key, kind in _GLM_FIELDS:
                if isinstance(extra.get(key), kind):
                    raise reject("unknown-format", f"{path}.{key}", mixed(row) or "")
        if extra.get("tools") is not None:
            found = normalize_tools(extra["tools"], fx, f"{path}.tools")
            if found and role != "system":
                fx.apply("tools-to-system", f"{path}.tools", f"tools on a {role} message")
            builder.add_tools(found, f"{path}.tools")
        if role == "observation":
            if calls:
                results.append((i, message))
            else:
                builder.add("observation", _text(message.content))
            continue
        flush()
        found_calls = list(message.tool_calls or [])
        if message.function_call is not None:
            found_calls.append(ToolCall(function=message.function_call))
        if role == "function_call":
            raise reject("bad-call", f"{path}.role", "role function_call in an OpenAI-style row: use tool_calls")
        text = _text(message.content)
        if text or not found_calls:
            builder.add(role, text, path=f"{path}.content")
        for k, call in enumerate(found_calls):
            call_path = f"{path}.tool_calls[{k}].function.arguments"
            fx.apply("function-call", f"{path}.tool_calls[{k}]", "tool call")
            arguments = call_arguments(call.function.arguments, fx, call_path, string_is_normal=True)
            calls.append((call.id, call.function.name, arguments))
        at = path
    flush()
