"""Checks on a converted conversation: what would render wrong, train wrong, or fail at inference.

One small function per check code, registered in the tables at the end, as jsonschema has one
function per keyword; :func:`check_row` walks the table. Each check looks at the whole row and adds
its findings with the index of the message they are about: a row's issues come out message by
message, in table order within a message. Every finding is an :class:`~glmdata.issues.Issue` with
a stable code (``issues.CODES``) and a path. Tool schemas are toolschema's business.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

from glmdata import jsontext, toolschema
from glmdata.issues import Issue
from glmdata.models import FunctionDict, MessageDict, MessagesRow
from glmdata.repairs import JSON_CALL_START, parse_json_call

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
)
SPECIAL_TOKEN_RE = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
_SPECIAL_BYTES = re.compile(SPECIAL_TOKEN_RE.pattern.encode())
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")
OVERSIZED_CHARS = 32_768
WHITESPACE_MIN_CHARS = 1_000
WHITESPACE_SHARE = 0.5


def tool_call(message: MessageDict) -> tuple[str, Any, str] | None:
    """``(name, arguments, style)`` when the message is an assistant tool call, else None.

    Native calls carry the name in ``metadata`` and the arguments as JSON text in ``content``
    (``arguments`` is then the raw text); JSON-style calls are ``{"name", "arguments"}`` content.
    """
    if message["role"] != "assistant":
        return None
    metadata = message.get("metadata")
    if metadata:
        return metadata, message["content"], "native"
    call = parse_json_call(message["content"])
    if call is not None:
        return call[0], call[1], "json"
    return None


def check_row(row: MessagesRow, calls: Mapping[int, dict] | None = None) -> list[Issue]:
    """All issues of one canonical row (errors and warnings), message by message.

    ``calls`` maps the index of a native call to its arguments, parsed already (the builder has
    them); a native call not in it has its content parsed here."""
    context = _Row(row, calls or {})
    for checks, present in ((_TOOL_CHECKS, context.declared), (_TEXT_CHECKS, True), (_CALL_CHECKS, context.calls), (_TURN_CHECKS, True)):
        if present:
            for check in checks:
                check(context)
    context.found.sort(key=itemgetter(0))  # stable: within a message, in table order
    return [issue for _, issue in context.found]


class _Call(NamedTuple):
    name: str
    arguments: Any  #: parsed; None when the text is not JSON
    native: bool
    not_json: str | None  #: why a native call's text is not JSON


class _Row:
    """What the checks of one row share, found once: its messages, their roles and contents, all
    its texts in one string (a C-speed scan of it spares most rows a look at each message), the
    tools it declares, its tool calls; and the findings so far."""

    __slots__ = ("messages", "roles", "contents", "text", "declared", "tools", "calls", "found")

    def __init__(self, row: MessagesRow, parsed: Mapping[int, dict]):
        self.messages = messages = row["messages"]
        self.roles = roles = [message["role"] for message in messages]
        self.contents = contents = [message["content"] for message in messages]
        #: (message index, tool index, function, its parameters' schema) of each function tool
        self.declared: list[tuple[int, int, FunctionDict, toolschema.ToolSchema]] = []
        #: name -> (function, its parameters' schema); a name declared twice: the last declaration
        self.tools: dict[str, tuple[FunctionDict, toolschema.ToolSchema]] = {}
        #: message index -> the call it makes
        self.calls: dict[int, _Call] = {}
        self.found: list[tuple[int, Issue]] = []
        names = []
        for i, message in enumerate(messages):
            if "tools" in message:
                for k, tool in enumerate(message["tools"] or ()):
                    function = tool.get("function")
                    if function is not None:
                        schema = toolschema.tool_schema(function.get("parameters") or {})
                        self.declared.append((i, k, function, schema))
                        self.tools[function["name"]] = function, schema
            metadata = message.get("metadata")
            if metadata:
                names.append(metadata)
            # the cheap test first: most turns are no call of either kind
            if roles[i] == "assistant" and (metadata or contents[i][:1] == JSON_CALL_START):
                call = tool_call(message)
                if call is not None:
                    name, arguments, style = call
                    not_json = None
                    if style == "native":
                        arguments, not_json = _arguments(arguments, parsed.get(i))
                    self.calls[i] = _Call(name, arguments, style == "native", not_json)
        self.text = "\n".join(contents + names) if names else "\n".join(contents)

    def add(self, i: int, code: str, path: str, message: str) -> None:
        """A finding about message ``i`` (``len(messages)``: about the whole row)."""
        self.found.append((i, Issue(code, path, message)))


def _arguments(text: str, parsed: dict | None) -> tuple[Any, str | None]:
    """A native call's arguments, parsed (``parsed`` when given), or None and why ``text`` is not
    JSON. NaN and Infinity are not JSON (the standard library reads them: so does jsontext)."""
    try:
        arguments = jsontext.loads(text) if parsed is None else parsed
        if "NaN" in text or "Infinity" in text:
            json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        return None, exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return arguments, None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


# ---------------------------------------------------------------------------------------- tools


def _invalid_tool_schema(row: _Row) -> None:
    for i, k, function, schema in row.declared:
        if schema.problem is not None:
            path = f"messages[{i}].tools[{k}].function.parameters"
            row.add(i, "invalid-tool-schema", path, f"tool {function['name']!r}: {schema.problem}")


def _special_token_in_tools(row: _Row) -> None:
    """Special tokens in a declared tool: it is rendered into the system prompt."""
    for i, k, function, _ in row.declared:
        text = jsontext.compact(function)
        found = _SPECIAL_BYTES.search(text) if b"<" in text or b"MASK]" in text else None  # memchr first
        if found:
            message = f"tool {function['name']!r} contains the special token {found.group().decode()}"
            row.add(i, "special-token", f"messages[{i}].tools[{k}].function", message)


# ---------------------------------------------------------------------------------------- texts


def _may_hold_special(text: str) -> bool:
    """Every special token holds "<|", "MASK]" or "op>" (a test checks): a text without any needs
    no regex search."""
    return "<|" in text or "MASK]" in text or "op>" in text


def _special_token(row: _Row) -> None:
    """Special tokens in content and in metadata (a native call's name line)."""
    if not ("<" in row.text or "[" in row.text) or not _may_hold_special(row.text):  # one-character scans are fastest
        return
    for i, message in enumerate(row.messages):
        for field in ("content", "metadata"):
            text = message.get(field)
            found = SPECIAL_TOKEN_RE.search(text) if text else None
            if found:
                row.add(i, "special-token", f"messages[{i}].{field}", f"contains the special token {found.group()} at char {found.start()}")


def _system_position(row: _Row) -> None:
    if "system" not in row.roles[1:]:
        return
    message = "more than one system message" if row.roles[0] == "system" else "system message is not the first message"
    for i, role in enumerate(row.roles):
        if i and role == "system":
            row.add(i, "system-position", f"messages[{i}]", message)


def _empty_content(row: _Row) -> None:
    """Empty or whitespace-only content, which the template drops; but for a system message that
    only carries tools (its content is meant to be "")."""
    if "" not in row.contents and not any(map(str.isspace, row.contents)):
        return
    for i, message in enumerate(row.messages):
        content = message["content"]
        if (not content or content.isspace()) and not (content == "" and message["role"] == "system" and message.get("tools")):
            what = "empty" if not content else "whitespace only"
            row.add(i, "empty-content", f"messages[{i}].content", f"{message['role']} content is {what}")


def _placeholder(row: _Row) -> None:
    if "{" not in row.text or "{{" not in row.text:
        return
    for i, content in enumerate(row.contents):
        found = _PLACEHOLDER.search(content)
        if found:
            row.add(i, "placeholder", f"messages[{i}].content", f"template placeholder {found.group()} left in the text")


def _oversized_or_whitespace_content(row: _Row) -> None:
    """Oversized content, and content that is mostly whitespace (a padded table)."""
    if max(map(len, row.contents), default=0) < WHITESPACE_MIN_CHARS:
        return
    for i, content in enumerate(row.contents):
        if len(content) < WHITESPACE_MIN_CHARS:
            continue
        if len(content) > OVERSIZED_CHARS:
            row.add(i, "oversized-content", f"messages[{i}].content", f"{len(content):,} characters")
        blank = len(content) - len("".join(content.split()))
        if blank > WHITESPACE_SHARE * len(content):
            row.add(i, "whitespace-content", f"messages[{i}].content", f"{blank:,} of {len(content):,} characters are whitespace")


# ---------------------------------------------------------------------------------------- calls


def _call_roundtrip(row: _Row) -> None:
    """GLM-4 inference reads a native call's first line as the tool name."""
    for i, call in row.calls.items():
        if call.native and ("\n" in call.name or call.name != call.name.strip()):
            row.add(i, "call-roundtrip", f"messages[{i}].metadata", f"tool name {call.name!r} would not parse back as one line")


def _arguments_not_object(row: _Row) -> None:
    for i, call in row.calls.items():
        if call.not_json is not None:
            row.add(i, "arguments-not-object", f"messages[{i}].content", f"call arguments are not JSON ({call.not_json})")
        elif not isinstance(call.arguments, dict):
            kind = type(call.arguments).__name__
            row.add(i, "arguments-not-object", f"messages[{i}].content", f"call arguments are a {kind}, not an object")


def _undeclared_tool(row: _Row) -> None:
    for i, call in row.calls.items():
        if isinstance(call.arguments, dict) and call.name not in row.tools:
            declared = ", ".join(row.tools) or "none"
            row.add(i, "undeclared-tool", f"messages[{i}]", f"call to {call.name!r}, which is not declared (declared: {declared})")


def _arguments_against_schema(row: _Row) -> None:
    """``missing-argument``, ``unknown-argument`` and ``argument-type``: a call's arguments
    against the parameters of the tool it calls."""
    for i, call in row.calls.items():
        declared = row.tools.get(call.name)
        if declared is None or not isinstance(call.arguments, dict):
            continue
        function, schema = declared
        for code, key in schema.check_arguments(call.arguments):
            if code == "missing-argument":
                row.add(i, code, f"messages[{i}]", f"call to {call.name!r} lacks required argument {key!r}")
            elif code == "unknown-argument":
                row.add(i, code, f"messages[{i}]", f"call to {call.name!r} passes {key!r}, which the tool does not declare")
            else:
                value = jsontext.dumps(call.arguments[key])[:60]
                text = jsontext.dumps(function["parameters"]["properties"][key])[:80]  # this row's, its own description in
                row.add(i, code, f"messages[{i}].{key}", f"{key}={value} does not match {text}")


def _call_without_observation(row: _Row) -> None:
    last = len(row.roles) - 1
    for i, call in row.calls.items():
        if i == last or row.roles[i + 1] != "observation":
            row.add(i, "call-without-observation", f"messages[{i}]", f"call to {call.name!r} has no observation after it")


def _observation_without_call(row: _Row) -> None:
    if "observation" not in row.roles:
        return
    for i, role in enumerate(row.roles):
        if role == "observation" and i - 1 not in row.calls:
            before = row.roles[i - 1] if i else "nothing"
            message = f"observation follows {before}, not a tool call (was the call written as prose?)"
            row.add(i, "observation-without-call", f"messages[{i}]", message)


# ------------------------------------------------------------------------------------------ row


def _no_assistant(row: _Row) -> None:
    if "assistant" not in row.roles:
        row.add(len(row.roles), "no-assistant", "messages", "no assistant turn")


def _not_ending_assistant(row: _Row) -> None:
    last = len(row.roles) - 1
    if "assistant" in row.roles and row.roles[last] != "assistant":
        row.add(last, "not-ending-assistant", f"messages[{last}]", f"conversation ends with {row.roles[last]}")


# The checks, in the order their findings come out within one message; a group runs only on rows
# that have what it checks (tools declared, calls made).
_TOOL_CHECKS: tuple[Callable[[_Row], None], ...] = (_invalid_tool_schema, _special_token_in_tools)
_TEXT_CHECKS: tuple[Callable[[_Row], None], ...] = (
    _special_token,
    _system_position,
    _empty_content,
    _placeholder,
    _oversized_or_whitespace_content,
)
_CALL_CHECKS: tuple[Callable[[_Row], None], ...] = (
    _call_roundtrip,
    _arguments_not_object,
    _undeclared_tool,
    _arguments_against_schema,
    _call_without_observation,
)
_TURN_CHECKS: tuple[Callable[[_Row], None], ...] = (_observation_without_call, _no_assistant, _not_ending_assistant)
