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
import unicodedata
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from glmdata import jsontext, toolschema
from glmdata.issues import Issue
from glmdata.models import FunctionDict, MessageDict, MessagesRow
from glmdata.repairs import JSON_CALL_START, parse_json_call

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
)
SPECIAL_TOKEN_RE = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
_SPECIAL = re.compile(SPECIAL_TOKEN_RE.pattern.encode())  # in JSON
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")
OVERSIZED_CHARS = 32_768
WHITESPACE_MIN_CHARS = 1_000
WHITESPACE_SHARE = 0.5


_ROLE, _CONTENT, _HEAD = itemgetter("role"), itemgetter("content"), itemgetter(slice(1))


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
    if context.declared:
        for check in _TOOL_CHECKS:
            check(context)
    for check in _TEXT_CHECKS:
        check(context)
    if context.reasoning:
        for check in _REASONING_CHECKS:
            check(context)
    if context.calls:
        for check in _CALL_CHECKS:
            check(context)
    if context.roles[-1:] != ["assistant"]:
        for check in _ENDING_CHECKS:
            check(context)
    if not context.found:
        return []
    context.found.sort(key=itemgetter(0))  # stable: within a message, in table order
    return [issue for _, issue in context.found]


class _Row:
    """What the checks of one row share, found once: its messages, their roles and contents, all
    its texts in one string (a C-speed scan of it spares most rows a look at each message), the
    tools it declares, its tool calls; and the findings so far."""

    __slots__ = (
        "blank_systems",
        "calls",
        "contents",
        "declared",
        "found",
        "messages",
        "reasoning",
        "roles",
        "text",
        "tools",
    )

    def __init__(self, row: MessagesRow, parsed: Mapping[int, dict]):
        self.messages = messages = row["messages"]
        self.roles = roles = list(map(_ROLE, messages))
        self.contents = contents = list(map(_CONTENT, messages))
        #: (message index, tool index, function, its parameters' schema) of each function tool
        self.declared: list[tuple[int, int, FunctionDict, toolschema.ToolSchema]] = []
        #: name -> (function, its parameters' schema); None for a name declared twice, differently
        self.tools: dict[str, tuple[FunctionDict, toolschema.ToolSchema] | None] = {}
        #: message index -> the call it makes: (name, parsed arguments or None, native?, why the
        #: arguments of a native call are not JSON or None)
        self.calls: dict[int, tuple[str, Any, bool, str | None]] = {}
        #: system messages with tools and content "": they only carry the tools, as they should
        self.blank_systems = 0
        self.found: list[tuple[int, Issue]] = []
        #: message index -> its reasoning
        self.reasoning: dict[int, str] = {}
        names = []  # metadata and reasoning, for `text`
        for i, message in enumerate(messages):
            if "tools" in message:
                for k, tool in enumerate(message["tools"] or ()):
                    function = tool.get("function")
                    if function is not None:
                        schema = toolschema.tool_schema(function.get("parameters") or {})
                        self.declared.append((i, k, function, schema))
                        self.tools[function["name"]] = function, schema
                if message["tools"] and roles[i] == "system" and contents[i] == "":
                    self.blank_systems += 1
            metadata = message.get("metadata")
            if metadata:
                names.append(metadata)
            if roles[i] != "assistant":
                continue
            if "reasoning" in message:
                self.reasoning[i] = message["reasoning"]
                names.append(message["reasoning"])
            # a call as tool_call() finds it, with its arguments parsed
            if metadata:  # native: the name in metadata, the arguments as JSON text in content
                arguments, text, not_json = parsed.get(i), contents[i], None
                if arguments is None or "NaN" in text or "Infinity" in text:
                    arguments, not_json = _arguments(text, arguments)
                self.calls[i] = (metadata, arguments, True, not_json)
            elif contents[i][:1] == JSON_CALL_START and (call := parse_json_call(contents[i])) is not None:
                self.calls[i] = (call[0], call[1], False, None)
        self.text = "\n".join(contents + names if names else contents)

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


def _duplicate_tool_name(row: _Row) -> None:
    """One name declared twice, differently (identical copies are merged by the builder): the
    template renders both, and the model learns an ambiguous declaration. Calls to it are not
    checked against either: which one they mean is what is ambiguous."""
    if len(row.tools) == len(row.declared):
        return
    first: dict[str, tuple[str, FunctionDict]] = {}
    for i, k, function, _ in row.declared:
        path, name = f"messages[{i}].tools[{k}]", function["name"]
        if name not in first:
            first[name] = path, function
            continue
        where, other = first[name]
        row.tools[name] = None
        differ = [key for key in dict.fromkeys([*other, *function]) if other.get(key) != function.get(key)]
        what = f"tool {name!r} is declared again, differing in {', '.join(differ) or 'JSON types'} (first at {where})"
        row.add(i, "duplicate-tool-name", path, what)


def _invalid_tool_schema(row: _Row) -> None:
    for i, k, function, schema in row.declared:
        if schema.problem is not None:
            path = f"messages[{i}].tools[{k}].function.parameters"
            row.add(i, "invalid-tool-schema", path, f"tool {function['name']!r}: {schema.problem}")


def _special_token_in_tools(row: _Row) -> None:
    """Special tokens in a declared tool: it is rendered into the system prompt."""
    for i, k, function, _ in row.declared:
        text = jsontext.compact(function)
        found = _SPECIAL.search(text) if b"<" in text or b"MASK]" in text else None  # memchr first
        if found:
            message = f"tool {function['name']!r} contains the special token {found.group().decode()}"
            row.add(i, "special-token", f"messages[{i}].tools[{k}].function", message)


# ---------------------------------------------------------------------------------------- texts


def _may_hold_special(text: str) -> bool:
    """Every special token holds "<|" or "op>", or else "MASK]": a text without them needs no
    regex search (test_check_special_token has each token found). One-character scans are the
    fastest: they go first."""
    return ("<" in text and ("<|" in text or "op>" in text)) or ("[" in text and "MASK]" in text)


def _special_token(row: _Row) -> None:
    """Special tokens in content and in metadata (a native call's name line)."""
    if not _may_hold_special(row.text):
        return
    for i, message in enumerate(row.messages):
        fields = [("content", message["content"]), ("metadata", message.get("metadata"))]
        if i in row.reasoning:
            fields.append(("reasoning", row.reasoning[i]))
        for field, text in fields:
            found = SPECIAL_TOKEN_RE.search(text) if text else None
            if found:
                what = f"contains the special token {found.group()} at char {found.start()}"
                row.add(i, "special-token", f"messages[{i}].{field}", what)


def _system_position(row: _Row) -> None:
    if "system" not in row.roles[1:]:
        return
    message = "more than one system message" if row.roles[0] == "system" else "system message is not the first message"
    for i, role in enumerate(row.roles):
        if i and role == "system":
            row.add(i, "system-position", f"messages[{i}]", message)


def _empty_content(row: _Row) -> None:
    """Empty content, which the template drops, and content with nothing visible (whitespace and
    format characters such as U+200B), which it renders and the model would learn as an invisible
    answer; but for a system message that only carries tools (its content is meant to be "").
    The first character tells cheaply: one that is printable and not the space is visible (format
    characters and whitespace but the space are not printable); only the others are looked into."""
    heads = "".join(map(_HEAD, row.contents))
    if row.contents.count("") == row.blank_systems and heads.isprintable() and " " not in heads:
        return
    for i, message in enumerate(row.messages):
        content = message["content"]
        if content and content[0] != " " and content[0].isprintable():
            continue
        if content == "" and message["role"] == "system" and message.get("tools"):
            continue
        if not content or content.isspace():
            what = "empty" if not content else "whitespace only"
        elif _invisible(content):
            shown = sorted({f"U+{ord(c):04X}" for c in content if not c.isspace()})
            what = f"only invisible characters ({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''})"
        else:
            continue
        row.add(i, "empty-content", f"messages[{i}].content", f"{message['role']} content is {what}")


def _invisible(text: str) -> bool:
    """Nothing but whitespace and format characters (Unicode category Cf: zero-width ones, U+FEFF ...)."""
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text.strip())


def _placeholder(row: _Row) -> None:
    if "{" not in row.text or "{{" not in row.text:  # the one-character scan is the fastest
        return
    for i, content in enumerate(row.contents):
        found = _PLACEHOLDER.search(content)
        if found:
            row.add(
                i, "placeholder", f"messages[{i}].content", f"template placeholder {found.group()} left in the text"
            )


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
            row.add(
                i,
                "whitespace-content",
                f"messages[{i}].content",
                f"{blank:,} of {len(content):,} characters are whitespace",
            )


# ---------------------------------------------------------------------------------------- reasoning


def _think_tag_in_reasoning(row: _Row) -> None:
    """A ``<think>`` or ``</think>`` inside reasoning: GLM-4.5 renders the reasoning between those
    tags, so one inside ends the block early or nests another (the model would learn either)."""
    for i, text in row.reasoning.items():
        for tag in ("</think>", "<think>"):
            at = text.find(tag)
            if at >= 0:
                what = (
                    f"reasoning contains {tag} at char {at}: it would end (or nest) the <think> block it is rendered in"
                )
                row.add(i, "bad-reasoning", f"messages[{i}].reasoning", what)
                break


# ---------------------------------------------------------------------------------------- calls


def _call_roundtrip(row: _Row) -> None:
    """GLM-4 inference reads a native call's first line as the tool name."""
    for i, (name, _, native, _) in row.calls.items():
        if native and ("\n" in name or name != name.strip()):
            row.add(
                i, "call-roundtrip", f"messages[{i}].metadata", f"tool name {name!r} would not parse back as one line"
            )


def _arguments_not_object(row: _Row) -> None:
    for i, (_, arguments, _, not_json) in row.calls.items():
        if not_json is not None:
            row.add(i, "arguments-not-object", f"messages[{i}].content", f"call arguments are not JSON ({not_json})")
        elif not isinstance(arguments, dict):
            kind = type(arguments).__name__
            row.add(i, "arguments-not-object", f"messages[{i}].content", f"call arguments are a {kind}, not an object")


def _undeclared_tool(row: _Row) -> None:
    for i, (name, arguments, _, _) in row.calls.items():
        if isinstance(arguments, dict) and name not in row.tools:
            declared = ", ".join(row.tools) or "none"
            row.add(
                i,
                "undeclared-tool",
                f"messages[{i}]",
                f"call to {name!r}, which is not declared (declared: {declared})",
            )


def _arguments_against_schema(row: _Row) -> None:
    """``missing-argument``, ``unknown-argument`` and ``argument-type``: a call's arguments
    against the parameters of the tool it calls."""
    for i, (name, arguments, _, _) in row.calls.items():
        declared = row.tools.get(name)
        if declared is None or not isinstance(arguments, dict):
            continue
        function, schema = declared
        for code, key in schema.check_arguments(arguments):
            if code == "missing-argument":
                row.add(i, code, f"messages[{i}]", f"call to {name!r} lacks required argument {key!r}")
            elif code == "unknown-argument":
                row.add(i, code, f"messages[{i}]", f"call to {name!r} passes {key!r}, which the tool does not declare")
            else:
                value = jsontext.dumps(arguments[key])[:60]
                text = jsontext.dumps(function["parameters"]["properties"][key])[
                    :80
                ]  # this row's, its own description in
                row.add(i, code, f"messages[{i}].{key}", f"{key}={value} does not match {text}")


def _call_without_observation(row: _Row) -> None:
    last = len(row.roles) - 1
    for i, (name, _, _, _) in row.calls.items():
        if i == last or row.roles[i + 1] != "observation":
            row.add(i, "call-without-observation", f"messages[{i}]", f"call to {name!r} has no observation after it")


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


# The checks, in the order their findings come out within one message (check_row runs them in
# this order); a group runs only on rows that have what it checks: tools declared, calls made, a
# last turn that is not the assistant's.
_TOOL_CHECKS: tuple[Callable[[_Row], None], ...] = (_duplicate_tool_name, _invalid_tool_schema, _special_token_in_tools)
_TEXT_CHECKS: tuple[Callable[[_Row], None], ...] = (
    _special_token,
    _system_position,
    _empty_content,
    _placeholder,
    _oversized_or_whitespace_content,
    _observation_without_call,
)
_REASONING_CHECKS: tuple[Callable[[_Row], None], ...] = (_think_tag_in_reasoning,)
_CALL_CHECKS: tuple[Callable[[_Row], None], ...] = (
    _call_roundtrip,
    _arguments_not_object,
    _undeclared_tool,
    _arguments_against_schema,
    _call_without_observation,
)
_ENDING_CHECKS: tuple[Callable[[_Row], None], ...] = (_no_assistant, _not_ending_assistant)
