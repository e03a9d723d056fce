"""Builds canonical GLM-4 messages; every format converter emits through it.

Keeping message construction in one place is what makes every format produce the same shapes:
tools on the system message, tool calls in the chosen call style, observations as their own turns.
"""

from __future__ import annotations

from typing import Any

from glmdata.issues import RowError, reject
from glmdata.jsontext import canonical, dumps
from glmdata.models import MessageDict, MessagesRow, ToolDict
from glmdata.repairs import Fixer, call_arguments, loads_lenient, parse_json_call

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def misplaced_reasoning(role: str, path: str) -> RowError:
    """The rejection of reasoning on a message that is not the assistant's: only an assistant
    turn reasons (no template renders reasoning elsewhere), and moving it would change who says it."""
    return reject(
        "misplaced-reasoning",
        path,
        f"reasoning on a {role} message; only assistant messages carry reasoning: move it to the assistant "
        "message it belongs to, or remove it",
    )


def one_reasoning(values: list[tuple[str, str | None]]) -> tuple[str | None, str]:
    """The reasoning of a message given under several names (``reasoning_content``, ``reasoning``):
    ``(text, path)`` of the one that holds text; the same text twice is one; two texts that
    differ reject the row. ``(None, "")`` when none holds text."""
    found = [(text, path) for path, text in values if text and not text.isspace()]
    if not found:
        return None, ""
    if any(text != found[0][0] for text, _ in found[1:]):
        paths = " and ".join(path for _, path in found)
        raise reject("bad-reasoning", found[1][1], f"{paths} hold different reasoning; keep one")
    return found[0]


class MessagesBuilder:
    """Accumulates messages for one row and returns ``{"messages": [...]}``.

    ``calls`` maps the index (in the built row) of each native tool call to its arguments object,
    parsed once here and kept for the checks, which need not parse the content again."""

    __slots__ = ("call_style", "calls", "emptied", "fx", "messages", "tools", "tools_path")

    def __init__(self, fx: Fixer, call_style: str = "native"):
        self.fx = fx
        self.call_style = call_style
        self.messages: list[MessageDict] = []
        self.tools: list[ToolDict] | None = None
        self.tools_path = ""
        self.calls: dict[int, dict[str, Any]] = {}
        #: (index of the message it comes with, path) of each message's tools found empty
        self.emptied: list[tuple[int, str]] = []

    def add(
        self,
        role: str,
        content: str,
        *,
        loss: bool | None = None,
        metadata: str | None = None,
        path: str | None = None,
        reasoning: str | None = None,
    ) -> None:
        """Append a message. Given ``path`` (where the text is in the source row), an assistant
        message whose content starts with ``<think>...</think>`` has that moved into its reasoning
        (the ``think-tags`` repair), and one that holds a tool call in the other call style is
        rewritten in the configured one (the ``call-style`` repair), whatever format it came from:
        so every output row has its calls in one style, and converting the output again changes
        nothing. ``reasoning`` (assistant messages only: the caller rejects it elsewhere with
        :func:`misplaced_reasoning`) is kept when it holds more than whitespace."""
        if path is not None and role == "assistant":
            if THINK_OPEN in content:
                content, reasoning = self._think(content, reasoning, path)
            if metadata and self.call_style == "json":
                self.fx.apply("call-style", path, "native call rewritten in json style")
                arguments = call_arguments(content, self.fx, path, string_is_normal=True)
                self.call(metadata, arguments, loss=loss, reasoning=reasoning)
                return
            call = parse_json_call(content) if not metadata and self.call_style == "native" else None
            if call is not None:
                self.fx.apply("call-style", path, "json-style call rewritten in native style")
                arguments = call_arguments(call[1], self.fx, f"{path}.arguments")
                self.call(call[0], arguments, loss=loss, reasoning=reasoning)
                return
        if metadata and reasoning is None and self.messages and "reasoning" in self.messages[-1]:
            reasoning = self._thought_before()
        message: MessageDict = {"role": role, "content": content}
        if metadata is not None:
            message["metadata"] = metadata
        if reasoning and not reasoning.isspace():
            message["reasoning"] = reasoning
        if loss is not None:
            message["loss"] = loss
        self.messages.append(message)

    def _thought_before(self) -> str | None:
        """The reasoning of the last message when it is an assistant message with reasoning and
        no text, taken off the row: a call right after it gets it (glm-4-9b-chat rows hold a
        call's reasoning so, written as text). None when the last message is not that."""
        last = self.messages[-1]
        if last["content"] == "" and last["role"] == "assistant" and "metadata" not in last:
            return self.messages.pop().get("reasoning")
        return None

    def _think(self, content: str, reasoning: str | None, path: str) -> tuple[str, str | None]:
        """``(content, reasoning)`` of content that starts with ``<think>R</think>`` (after
        whitespace): R without the newlines around it, as GLM-4.5's template reads it, and the
        rest of the content without the newlines it starts with. A ``<think>`` further in is text."""
        start = len(content) - len(content.lstrip())
        if not content.startswith(THINK_OPEN, start):
            return content, reasoning
        end = content.find(THINK_CLOSE, start)
        if end < 0:
            raise reject(
                "bad-reasoning",
                path,
                "content starts with <think> but has no </think>: the reasoning is cut off; close it or drop the row",
            )
        inner = content[start + len(THINK_OPEN) : end].strip("\n")
        if reasoning and not reasoning.isspace() and inner.strip():
            raise reject(
                "bad-reasoning",
                path,
                "reasoning is given twice: in a reasoning field and as <think>...</think> in the content; keep one",
            )
        self.fx.apply("think-tags", path, "reasoning written as <think>...</think> at the start of the content")
        return content[end + len(THINK_CLOSE) :].lstrip("\n"), inner or reasoning

    def add_text(self, role: str, content: str) -> None:
        """Append a plain message: what ``add`` does when given only a role and a text that is
        not a call."""
        self.messages.append({"role": role, "content": content})

    def call(self, name: str, arguments: dict, *, loss: bool | None = None, reasoning: str | None = None) -> None:
        """Append an assistant tool call in the configured call style (with the reasoning that
        leads to it, when it is the first message of its turn). Reasoning with no text right before
        the call (as glm-4-9b-chat rows hold it, written as text) is the call's own."""
        if reasoning is None and self.messages and "reasoning" in self.messages[-1]:
            reasoning = self._thought_before()
        if self.call_style == "json":
            self.add("assistant", dumps({"name": name, "arguments": arguments}), loss=loss, reasoning=reasoning)
        else:
            self.calls[len(self.messages)] = arguments
            self.add("assistant", dumps(arguments), loss=loss, metadata=name, reasoning=reasoning)

    def call_from_text(self, text: str, path: str, *, loss: bool | None = None, reasoning: str | None = None) -> None:
        """Append a call written as ``{"name": ..., "arguments": ...}`` text (Glaive ``function_call``)."""
        try:
            value = loads_lenient(text, self.fx, path)
        except ValueError as exc:
            raise reject("bad-call", path, f"function call is not JSON: {exc}") from None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise reject("bad-call", path, "function call has no string 'name'")
        arguments = value.get("arguments", value.get("parameters", {}))
        self.call(
            value["name"], call_arguments(arguments, self.fx, f"{path}.arguments"), loss=loss, reasoning=reasoning
        )

    def add_tools(self, tools: list[ToolDict] | None, path: str) -> None:
        """Declare tools for the row. A tool declared again, identically, is left out (the
        ``duplicate-tools`` repair); one declared again otherwise is kept, for the checks to tell.
        None for a message's tools (``path`` "messages[i].tools"): they were empty (the caller
        says ``empty-tools``), and the message may have carried only them."""
        if not tools:
            if path.endswith("].tools"):
                self.emptied.append((len(self.messages), path))
            return
        if self.tools is None:
            self.tools, self.tools_path = [], path
        if not self.tools and len({_tool_name(t) for t in tools}) == len(tools):
            self.tools.extend(tools)  # distinct names: no two are the same tool
            return
        seen = {canonical(t) for t in self.tools}
        for k, tool in enumerate(tools):
            key = canonical(tool)
            if key in seen:
                what = f"tool {_tool_name(tool)!r} is declared again, identically"
                self.fx.apply("duplicate-tools", f"{path}[{k}]", what)
            else:
                seen.add(key)
                self.tools.append(tool)

    def build(self) -> MessagesRow:
        """The finished row. A system message with empty content whose tools were empty goes
        (it carried only them: the ``empty-tools`` repair). Tools go on the first system message,
        created with empty content if none."""
        messages = self.messages
        for i, path in reversed(self.emptied):
            if i < len(messages) and messages[i]["role"] == "system" and messages[i]["content"] == "":
                where = path[: -len(".tools")]
                self.fx.apply("empty-tools", where, "system message with empty content only carried empty tools")
                del messages[i]
                self.calls = {k - (k > i): arguments for k, arguments in self.calls.items()}
        if self.tools:
            if messages and messages[0]["role"] == "system":
                first = messages[0]
                system: MessageDict = {"role": "system", "content": first["content"], "tools": self.tools}
                system.update({k: v for k, v in first.items() if k not in system})  # type: ignore[typeddict-item]
                messages[0] = system
            else:
                messages.insert(0, {"role": "system", "content": "", "tools": self.tools})
                self.calls = {i + 1: arguments for i, arguments in self.calls.items()}
        return {"messages": messages}


def _tool_name(tool: ToolDict) -> str:
    function = tool.get("function")
    return function["name"] if function is not None else tool["type"]
