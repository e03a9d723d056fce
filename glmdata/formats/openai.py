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
Legacy ``function_call`` / ``functions`` are accepted too. An assistant message's
``reasoning_content`` (or ``reasoning``, as newer servers name it) is its reasoning, kept on the
first GLM-4 message of its turn (its text, or its first call); on any other message it rejects the
row (``misplaced-reasoning``). ``loss`` flags (as ``--template glm-4.5`` writes them) are kept. One
tool message holding the results of all the calls before it as a JSON list of ``{"name",
"content"}`` is split into one result per call (``bundled-tool-results``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder, misplaced_reasoning, one_reasoning
from glmdata.issues import reject, validate
from glmdata.jsontext import dumps, loads
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
    loss: bool | None = Field(default=None, description="train on this message or not (overrides the role default)")
    reasoning_content: str | None = Field(default=None, description="assistant only: the reasoning before it")
    reasoning: str | None = Field(default=None, description="the same as reasoning_content, under another name")


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
_GLM_FIELDS = (("metadata", str), ("loss", bool))  # loss: read by both readers, metadata only by messages


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


def _pair(calls: list[_Call], results: list[_Result], at: str) -> list[int]:
    """Index of the call each result answers (-1: none, a result beyond the calls): by
    ``tool_call_id`` when any result has one, else by position."""
    if len(results) == 1 and results[0][1] in (None, calls[0][0]):
        return [0]
    if all(cid is None for _, cid, _, _ in results):
        return [k if k < len(calls) else -1 for k in range(len(results))]
    taken = [False] * len(calls)
    order = []
    for i, cid, _, _ in results:
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


# (id, name, arguments, loss) of a call of the last assistant message; (message index,
# tool_call_id, text, loss) of a tool result right after it
_Call = tuple[str | None, str, dict, bool | None]
_Result = tuple[int, str | None, str, bool | None]


class Chat:
    """What OpenAI-style readers share (this module's, and LLaMA-Factory's multi-part one): a
    message at a time, assistant calls paired with the tool results that follow them, and emitted
    as GLM-4 turns, each call right before its own result (see the module's docstring). The
    reasoning of an assistant message goes on the first message of its turn: its text, or the
    first call emitted."""

    __slots__ = ("at", "builder", "calls", "fx", "reasoning", "results")

    def __init__(self, fx: Fixer, builder: MessagesBuilder):
        self.fx, self.builder = fx, builder
        self.calls: list[_Call] = []
        self.results: list[_Result] = []
        self.at = ""  # path of the assistant message whose calls are pending
        self.reasoning: str | None = None  # theirs, while no message of the turn carries it yet

    def message(
        self,
        i: int,
        role: str,
        text: str,
        *,
        calls: list[tuple[str | None, str, Any, str, str]] = [],  # noqa: B006 - read only
        tool_call_id: str | None = None,
        reasoning: str | None = None,
        text_path: str = "",
        loss: bool | None = None,
        string_arguments: bool = True,
    ) -> None:
        """One source message, its role canonical. ``calls``: (id, name, arguments as given, where
        the call is, where its arguments are); ``string_arguments``: arguments are JSON text by the
        format's definition (OpenAI's), not a repair. ``reasoning`` only on an assistant message
        (the caller rejects it elsewhere)."""
        path = f"messages[{i}]"
        if role == "observation":
            if self.calls:
                self.results.append((i, tool_call_id, text, loss))
            else:
                self.builder.add("observation", text, loss=loss)
            return
        self.flush()
        if text or not calls:
            self.builder.add(role, text, path=text_path or f"{path}.content", reasoning=reasoning, loss=loss)
            reasoning = None
        for cid, name, arguments, call_path, arguments_path in calls:
            self.fx.apply("function-call", call_path, "tool call")
            parsed = call_arguments(arguments, self.fx, arguments_path, string_is_normal=string_arguments)
            self.calls.append((cid, name, parsed, loss))
        self.reasoning = reasoning
        self.at = path

    def flush(self) -> None:
        """Emit the pending calls and their results."""
        if not self.calls and not self.results:
            return
        calls, results, builder = self.calls, self.results, self.builder
        if len(results) == 1 < len(calls) and results[0][1] is None and results[0][2][:1] == "[":
            results = self._unbundled(results[0]) or results
        order = _pair(calls, results, self.at) if results else []
        for (_, _, text, loss), k in zip(results, order):
            if k >= 0:
                builder.call(calls[k][1], calls[k][2], loss=calls[k][3], reasoning=self.reasoning)
                self.reasoning = None
            builder.add("observation", text, loss=loss)
        for k, (_, name, arguments, loss) in enumerate(calls):
            if k not in order:
                builder.call(name, arguments, loss=loss, reasoning=self.reasoning)
                self.reasoning = None
        self.calls, self.results, self.reasoning = [], [], None

    def _unbundled(self, result: _Result) -> list[_Result] | None:
        """One tool message holding the results of all the parallel calls before it, as a JSON
        list of ``{"name", "content", "tool_call_id"?}`` in the order of the calls (LLaMA-Factory's
        reasoning tool-use demo), split into one result per call (``bundled-tool-results``); None
        when it is not that."""
        i, _, text, loss = result
        try:
            items = loads(text)
        except ValueError:
            return None
        calls = self.calls
        if not (
            isinstance(items, list)
            and len(items) == len(calls)
            and all(
                isinstance(item, dict) and "content" in item and item.get("name") == call[1]
                for item, call in zip(items, calls)
            )
        ):
            return None
        self.fx.apply(
            "bundled-tool-results",
            f"messages[{i}].content",
            f"one tool message holds the results of {len(calls)} calls",
        )
        return [(i, None, c if isinstance(c := item["content"], str) else dumps(c), loss) for item in items]


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    data = validate(ADAPTER, row)
    tools = data.tools if data.tools is not None else data.functions
    if tools is not None:  # absent (or null, already reported by null-fields): nothing to repair
        builder.add_tools(normalize_tools(tools, fx, "tools"), "tools")
    chat = Chat(fx, builder)
    raw = row["messages"]
    for i, message in enumerate(data.messages):
        path = f"messages[{i}]"
        role = canonical_role(message.role, fx, f"{path}.role", NATIVE_ROLES)
        extra = raw[i]  # keys the model does not read: OpenAI rows have no tools on a message, nor metadata
        if isinstance(extra.get("metadata"), str):
            raise reject("unknown-format", f"{path}.metadata", mixed(row) or "")
        if extra.get("tools") is not None:
            found = normalize_tools(extra["tools"], fx, f"{path}.tools")
            if found and role != "system":
                fx.apply("tools-to-system", f"{path}.tools", f"tools on a {role} message")
            builder.add_tools(found, f"{path}.tools")
        reasoning = None
        if message.reasoning_content is not None or message.reasoning is not None:
            reasoning, where = one_reasoning(
                [(f"{path}.reasoning_content", message.reasoning_content), (f"{path}.reasoning", message.reasoning)]
            )
            if reasoning is not None and role != "assistant":
                raise misplaced_reasoning(role, where)
        if role == "function_call":
            raise reject("bad-call", f"{path}.role", "role function_call in an OpenAI-style row: use tool_calls")
        calls = []
        for k, call in enumerate(message.tool_calls or ()):
            where = f"{path}.tool_calls[{k}]"
            calls.append((call.id, call.function.name, call.function.arguments, where, f"{where}.function.arguments"))
        if message.function_call is not None:
            where = f"{path}.tool_calls[{len(calls)}]"
            calls.append((None, message.function_call.name, message.function_call.arguments, where, f"{where}.function.arguments"))  # fmt: skip
        chat.message(
            i,
            role,
            _text(message.content),
            calls=calls,
            tool_call_id=message.tool_call_id,
            reasoning=reasoning,
            loss=message.loss,
        )
    chat.flush()
