"""Checks on a converted conversation: what would render wrong, train wrong, or fail at inference.

Every finding is an :class:`~glmdata.issues.Issue` with a stable code (see ``issues.CODES``).
Tool schemas repeat across rows, so schema checks and argument validators are cached by the
schema's JSON text.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from glmdata.issues import Issue
from glmdata.formats.messages import parse_json_call

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
)
_SPECIAL = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")
OVERSIZED_CHARS = 32_768
WHITESPACE_MIN_CHARS = 1_000
WHITESPACE_SHARE = 0.5


def tool_call(message: dict) -> tuple[str, Any, str] | None:
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


def check_row(row: dict) -> list[Issue]:
    """All issues of one canonical row (errors and warnings)."""
    messages = row["messages"]
    issues: list[Issue] = []
    tools: dict[str, dict] = {}
    systems = 0
    has_assistant = False
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        role, content = message["role"], message["content"]
        for k, tool in enumerate(message.get("tools") or ()):
            function = tool.get("function")
            if function is not None:
                tools[function["name"]] = function
                _check_tool(function, f"{path}.tools[{k}].function", issues)
        if role == "system":
            systems += 1
            if i != 0 or systems > 1:
                issues.append(Issue("system-position", path, "system message is not the first message" if i else "more than one system message"))
        has_assistant = has_assistant or role == "assistant"
        _check_text(message, path, issues)
        call = tool_call(message)
        if call is not None:
            _check_call(call, tools, path, issues)
            if i + 1 >= len(messages) or messages[i + 1]["role"] != "observation":
                issues.append(Issue("call-without-observation", path, f"call to {call[0]!r} has no observation after it"))
        elif role == "observation" and (i == 0 or tool_call(messages[i - 1]) is None):
            before = messages[i - 1]["role"] if i else "nothing"
            issues.append(
                Issue("observation-without-call", path, f"observation follows {before}, not a tool call (was the call written as prose?)")
            )
    if not has_assistant:
        issues.append(Issue("no-assistant", "messages", "no assistant turn"))
    elif messages[-1]["role"] != "assistant":
        issues.append(Issue("not-ending-assistant", f"messages[{len(messages) - 1}]", f"conversation ends with {messages[-1]['role']}"))
    return issues


def _check_text(message: dict, path: str, issues: list[Issue]) -> None:
    content = message["content"]
    if not content.strip() and not (message["role"] == "system" and message.get("tools") and content == ""):
        what = "empty" if not content else "whitespace only"
        issues.append(Issue("empty-content", f"{path}.content", f"{message['role']} content is {what}"))
    for field in ("content", "metadata"):
        text = message.get(field)
        found = _SPECIAL.search(text) if text else None
        if found:
            issues.append(Issue("special-token", f"{path}.{field}", f"contains the special token {found.group()} at char {found.start()}"))
    if "{{" in content:
        found = _PLACEHOLDER.search(content)
        if found:
            issues.append(Issue("placeholder", f"{path}.content", f"template placeholder {found.group()} left in the text"))
    if len(content) > OVERSIZED_CHARS:
        issues.append(Issue("oversized-content", f"{path}.content", f"{len(content):,} characters"))
    if len(content) >= WHITESPACE_MIN_CHARS:
        blank = len(content) - len("".join(content.split()))
        if blank > WHITESPACE_SHARE * len(content):
            issues.append(Issue("whitespace-content", f"{path}.content", f"{blank:,} of {len(content):,} characters are whitespace"))


def _check_tool(function: dict, path: str, issues: list[Issue]) -> None:
    problem = _schema_problem(json.dumps(function.get("parameters", {}), sort_keys=True))
    if problem:
        issues.append(Issue("invalid-tool-schema", f"{path}.parameters", f"tool {function['name']!r}: {problem}"))
    text = json.dumps(function, ensure_ascii=False)
    found = _SPECIAL.search(text)
    if found:
        issues.append(Issue("special-token", path, f"tool {function['name']!r} contains the special token {found.group()}"))


@lru_cache(maxsize=4096)
def _schema_problem(schema_json: str) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = json.loads(schema_json)
    if schema.get("type", "object") != "object":
        return f"parameters must describe an object, not {schema.get('type')!r}"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "root"
        return f"not a valid JSON Schema at {where}: {exc.message}"
    return None


@lru_cache(maxsize=16384)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


def _check_call(call: tuple[str, Any, str], tools: dict[str, dict], path: str, issues: list[Issue]) -> None:
    name, arguments, style = call
    if style == "native":
        if "\n" in name or name != name.strip():
            issues.append(Issue("call-roundtrip", f"{path}.metadata", f"tool name {name!r} would not parse back as one line"))
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            issues.append(Issue("arguments-not-object", f"{path}.content", f"call arguments are not JSON ({exc.msg})"))
            return
    if not isinstance(arguments, dict):
        issues.append(Issue("arguments-not-object", f"{path}.content", f"call arguments are a {type(arguments).__name__}, not an object"))
        return
    function = tools.get(name)
    if function is None:
        declared = ", ".join(tools) or "none"
        issues.append(Issue("undeclared-tool", path, f"call to {name!r}, which is not declared (declared: {declared})"))
        return
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties")
    required = parameters.get("required")
    # an invalid schema (required not a list of names) is reported by invalid-tool-schema
    for key in required if isinstance(required, list) else ():
        if isinstance(key, str) and key not in arguments:
            issues.append(Issue("missing-argument", path, f"call to {name!r} lacks required argument {key!r}"))
    if not isinstance(properties, dict):
        return
    for key, value in arguments.items():
        schema = properties.get(key)
        if schema is None:
            issues.append(Issue("unknown-argument", path, f"call to {name!r} passes {key!r}, which the tool does not declare"))
        elif isinstance(schema, dict) and schema and _schema_problem_ok(schema) and not _argument_ok(parameters, key, value):
            issues.append(Issue("argument-type", f"{path}.{key}", f"{key}={json.dumps(value, ensure_ascii=False)[:60]} does not match {json.dumps(schema, ensure_ascii=False)[:80]}"))


def _argument_ok(parameters: dict, key: str, value: Any) -> bool:
    """Does ``value`` match the schema of property ``key``? Validated within its tool's schema, so
    that ``$ref: "#/$defs/..."`` resolves; when the tool's schema is broken (already reported as
    invalid-tool-schema), against the property's own schema. A reference that resolves nowhere
    cannot be checked: True."""
    from referencing.exceptions import Unresolvable

    root = json.dumps(parameters, sort_keys=True)
    schema = parameters["properties"][key]
    if _schema_problem(root) is None:
        validator = _validator(root).evolve(schema=schema)
    else:
        validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        return validator.is_valid(value)
    except Unresolvable:
        return True


def _schema_problem_ok(schema: dict) -> bool:
    return _schema_problem(json.dumps({"type": "object", "properties": {"x": schema}}, sort_keys=True)) is None
