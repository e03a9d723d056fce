"""Checks on a converted conversation: what would render wrong, train wrong, or fail at inference.

Every finding is an :class:`~glmdata.issues.Issue` with a stable code (see ``issues.CODES``).
Tool schemas repeat across rows, so schema checks and argument validators are cached by the
schema's JSON text.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache, partial
from typing import Any

import orjson

from glmdata.io import may_hold_long_number
from glmdata.issues import Issue
from glmdata.repairs import JSON_CALL_START, parse_json_call

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
)
SPECIAL_TOKEN_RE = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))
_SPECIAL = SPECIAL_TOKEN_RE
_SPECIAL_BYTES = re.compile(SPECIAL_TOKEN_RE.pattern.encode())
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
    tools: dict[str, tuple[_Tool, dict]] = {}
    systems = 0
    has_assistant = False
    previous_call = None
    last = len(messages) - 1
    for i, message in enumerate(messages):
        role = message["role"]
        content = message["content"]
        declared = message.get("tools")
        if declared:
            for k, tool in enumerate(declared):
                function = tool.get("function")
                if function is not None:
                    tools[function["name"]] = (_check_tool(function, f"messages[{i}].tools[{k}].function", issues), function)
        if role == "system":
            systems += 1
            if i != 0 or systems > 1:
                issues.append(Issue("system-position", f"messages[{i}]", "system message is not the first message" if i else "more than one system message"))
        elif role == "assistant":
            has_assistant = True
        if (not content or content.isspace()) and not (role == "system" and declared and content == ""):
            what = "empty" if not content else "whitespace only"
            issues.append(Issue("empty-content", f"messages[{i}].content", f"{role} content is {what}"))
        # every special token contains "<" or "[": C-speed scans spare most texts the regexes
        metadata = message.get("metadata")
        if "<" in content or "[" in content or ("{" in content and "{{" in content) or (metadata and ("<" in metadata or "[" in metadata)):
            _check_tokens(message, f"messages[{i}]", issues)
        if len(content) >= WHITESPACE_MIN_CHARS:
            _check_size(content, f"messages[{i}].content", issues)
        call = tool_call(message) if role == "assistant" and (metadata or content[:1] == JSON_CALL_START) else None
        if call is not None:
            _check_call(call, tools, f"messages[{i}]", issues)
            if i == last or messages[i + 1]["role"] != "observation":
                issues.append(Issue("call-without-observation", f"messages[{i}]", f"call to {call[0]!r} has no observation after it"))
        elif role == "observation" and previous_call is None:
            before = messages[i - 1]["role"] if i else "nothing"
            issues.append(
                Issue("observation-without-call", f"messages[{i}]", f"observation follows {before}, not a tool call (was the call written as prose?)")
            )
        previous_call = call
    if not has_assistant:
        issues.append(Issue("no-assistant", "messages", "no assistant turn"))
    elif messages[-1]["role"] != "assistant":
        issues.append(Issue("not-ending-assistant", f"messages[{last}]", f"conversation ends with {messages[-1]['role']}"))
    return issues


def _may_hold_special(text: str) -> bool:
    """Every special token holds "<|", "MASK]" or "op>" (a test checks): a text without any needs
    no regex search."""
    return "<|" in text or "MASK]" in text or "op>" in text


def _check_tokens(message: dict, path: str, issues: list[Issue]) -> None:
    """Special tokens in the content or metadata; template placeholders in the content."""
    for field in ("content", "metadata"):
        text = message.get(field)
        found = _SPECIAL.search(text) if text and _may_hold_special(text) else None
        if found:
            issues.append(Issue("special-token", f"{path}.{field}", f"contains the special token {found.group()} at char {found.start()}"))
    content = message["content"]
    if "{{" in content:
        found = _PLACEHOLDER.search(content)
        if found:
            issues.append(Issue("placeholder", f"{path}.content", f"template placeholder {found.group()} left in the text"))


def _check_size(content: str, path: str, issues: list[Issue]) -> None:
    """Oversized content, and content that is mostly whitespace (a padded table)."""
    if len(content) > OVERSIZED_CHARS:
        issues.append(Issue("oversized-content", path, f"{len(content):,} characters"))
    blank = len(content) - len("".join(content.split()))
    if blank > WHITESPACE_SHARE * len(content):
        issues.append(Issue("whitespace-content", path, f"{blank:,} of {len(content):,} characters are whitespace"))


def _key(value: Any) -> str:
    """Canonical JSON text of a schema, the cache key of its checks and validators."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, sort_keys=True)


class _Tool:
    """What the checks need to know about one declared tool, computed once per distinct tool."""

    __slots__ = ("name", "problem", "required", "properties", "checkable", "root", "checks", "plain")

    def __init__(self, function: dict):
        self.name = function["name"]
        parameters = function.get("parameters") or {}
        root = _key(parameters)
        self.problem = _problem(parameters, root)
        required = parameters.get("required")
        # an invalid schema (required not a list of names) is reported by invalid-tool-schema
        self.required = [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
        properties = parameters.get("properties")
        self.properties = properties if isinstance(properties, dict) else None
        # properties whose own schema is valid enough to validate an argument against
        self.checkable = {
            key: sub
            for key, sub in (self.properties or {}).items()
            if isinstance(sub, dict) and sub and (self.problem is None or _problem({"type": "object", "properties": {"x": sub}}) is None)
        }
        self.root = root
        fast = {key: _simple_checker(sub) for key, sub in self.checkable.items()}
        #: property -> does an argument value match its schema? (plain Python when it can be)
        self.checks = {key: check or partial(self._jsonschema_ok, key) for key, check in fast.items()}
        #: valid, and every argument check is plain Python: nothing here depends on description texts
        self.plain = self.problem is None and all(check is not None for check in fast.values())

    def _jsonschema_ok(self, key: str, value: Any) -> bool:
        """Does ``value`` match the schema of property ``key``, by jsonschema? Validated within the
        tool's schema, so that ``$ref: "#/$defs/..."`` resolves; when the tool's schema is broken
        (reported as invalid-tool-schema), against the property's own schema. A reference that
        resolves nowhere cannot be checked: True."""
        from referencing.exceptions import Unresolvable

        schema = self.checkable[key]
        if self.problem is None:
            validator = _validator(self.root).evolve(schema=schema)
        else:
            validator = _validator(_key(schema))
        try:
            return validator.is_valid(value)
        except Unresolvable:
            return True


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),  # parsed JSON: str, never a subclass
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
# keywords that only annotate: they constrain nothing a value could violate (``format`` included:
# jsonschema asserts it only when given a format checker, and argument checks give none)
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "format"})
_CHECKED = frozenset({"type", "enum", "items", "properties", "required", "additionalProperties"})


def _json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality of two scalars: numbers by value (1 == 1.0), the rest by type and value."""
    if type(a) in (int, float) and type(b) in (int, float):
        return a == b
    return type(a) is type(b) and a == b


def _simple_checker(schema: Any) -> Any:
    """A plain-Python validator, exactly equivalent to JSON Schema, for the schemas tool
    definitions mostly use (``type``, ``enum`` of scalars, annotations, ``items``, ``properties``,
    ``required``, ``additionalProperties`` of such schemas); None for anything else, which
    jsonschema validates. Tool arguments are checked on every call, and jsonschema costs tens of
    microseconds each."""
    if isinstance(schema, bool):
        return (lambda value: True) if schema else (lambda value: False)
    if not isinstance(schema, dict) or not set(schema) <= _ANNOTATIONS | _CHECKED:
        return None
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) and k in _TYPES for k in kinds)):
        return None
    enum = schema.get("enum")
    if enum is not None and (not isinstance(enum, list) or not all(e is None or type(e) in (str, bool, int, float) for e in enum)):
        return None
    item_check = None
    if "items" in schema:
        item_check = _simple_checker(schema["items"])
        if item_check is None:
            return None
    properties = schema.get("properties")
    property_checks: dict[str, Any] = {}
    if properties is not None:
        if not isinstance(properties, dict):
            return None
        for key, sub in properties.items():
            property_checks[key] = _simple_checker(sub)
            if property_checks[key] is None:
                return None
    required = schema.get("required")
    if required is not None and not (isinstance(required, list) and all(isinstance(k, str) for k in required)):
        return None
    extra_check = None
    if "additionalProperties" in schema:
        extra_check = _simple_checker(schema["additionalProperties"])
        if extra_check is None:
            return None
    type_ok = _type_check(kinds)
    if enum is not None:
        enum_ok = _enum_check(enum)
        type_ok = enum_ok if type_ok is None else (lambda value, t=type_ok: t(value) and enum_ok(value))
    if item_check is None and not property_checks and not required and extra_check is None:
        return type_ok or (lambda value: True)  # the usual property: a type, maybe an enum

    def check(value: Any) -> bool:
        if type_ok is not None and not type_ok(value):
            return False
        if item_check is not None and isinstance(value, list):
            return all(item_check(v) for v in value)
        if isinstance(value, dict):
            if required and not all(k in value for k in required):
                return False
            for key, item in value.items():
                sub = property_checks.get(key, extra_check)
                if sub is not None and not sub(item):
                    return False
        return True

    return check


def _type_check(kinds: list[str] | None) -> Any:
    """A predicate for JSON Schema ``type`` (None when there is no ``type``): one ``isinstance``
    for the usual single type, since it runs for every argument of every call."""
    if kinds is None:
        return None
    if len(kinds) == 1:
        return _TYPES[kinds[0]]
    checks = tuple(_TYPES[k] for k in kinds)
    return lambda value: any(c(value) for c in checks)


def _enum_check(enum: list) -> Any:
    """A predicate for an ``enum`` of scalars: a set lookup when every value is a string."""
    if all(type(e) is str for e in enum):
        allowed = frozenset(enum)
        return lambda value: type(value) is str and value in allowed
    return lambda value: any(_json_equal(value, e) for e in enum)


# A string under the key "description", in compact JSON: tool declarations that differ only in
# these texts (descriptions vary row by row; names, types and required lists repeat) share one
# _Tool when it is `plain` (valid, and checked without jsonschema), so that its set-up runs once.
_DESCRIPTION = re.compile(rb'"description":"[^"\\]*(?:\\.[^"\\]*)*"')
_TOOLS: dict[bytes, _Tool] = {}
_TOOLS_MAX = 1024


def _tool(text: bytes) -> _Tool:
    """The _Tool of a function given as its compact JSON, from the cache when it can be."""
    shape = _DESCRIPTION.sub(b'"description":""', text)
    tool = _TOOLS.get(shape)
    if tool is None:
        tool = _TOOLS.get(text)
        if tool is None:
            tool = _Tool(orjson.loads(text))
            if len(_TOOLS) >= _TOOLS_MAX:
                del _TOOLS[next(iter(_TOOLS))]  # the oldest entry
            _TOOLS[shape if tool.plain else text] = tool
    return tool


def _check_tool(function: dict, path: str, issues: list[Issue]) -> _Tool:
    try:
        text = orjson.dumps(function)
    except TypeError:  # integers beyond 64 bits: not worth caching
        text = json.dumps(function, ensure_ascii=False).encode()
        tool = _Tool(function)
    else:
        tool = _tool(text)
    if tool.problem:
        issues.append(Issue("invalid-tool-schema", f"{path}.parameters", f"tool {tool.name!r}: {tool.problem}"))
    found = _SPECIAL_BYTES.search(text) if b"<" in text or b"MASK]" in text else None  # memchr first: most tools hold neither
    if found:
        issues.append(Issue("special-token", path, f"tool {tool.name!r} contains the special token {found.group().decode()}"))
    return tool


def _problem(schema: dict, key: str | None = None) -> str | None:
    """What is wrong with a tool's parameter schema, or None; ``key`` is its ``_key`` if known."""
    if schema.get("type", "object") == "object":
        errors: list[tuple[str, str]] = []
        if _plain_errors(schema, "", errors):
            if not errors:
                return None
            if len(errors) == 1:  # more than one: jsonschema picks which to tell
                where, message = errors[0]
                return f"not a valid JSON Schema at {where or 'root'}: {message}"
    return _schema_problem(key or _key(schema))


@lru_cache(maxsize=1024)
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


_SIMPLE_TYPES = frozenset(_TYPES)
_TEXT_KEYWORDS = frozenset({"description", "title", "$comment", "format"})
_COUNT_KEYWORDS = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"})
_NUMBER_KEYWORDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


def _plain_errors(schema: Any, path: str, errors: list[tuple[str, str]]) -> bool:
    """Check ``schema`` against the Draft 2020-12 meta-schema in plain Python, as far as it uses
    only the keywords tool definitions mostly use: adds (place, message) to ``errors`` for each
    value of the wrong shape, worded as jsonschema's ``check_schema`` words it, and returns True;
    returns False when not sure (another keyword, a value it leaves to jsonschema), and then
    jsonschema decides and explains. The meta-schema check costs about a millisecond per schema
    (and 0.1 s to import jsonschema); tool declarations differ row by row (their descriptions
    do), so it would run for almost every row."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        errors.append((path, f"{schema!r} is not of type 'object', 'boolean'"))
        return True
    for key, value in schema.items():
        where = f"{path}/{key}" if path else key
        if key in _TEXT_KEYWORDS:
            if not isinstance(value, str):
                errors.append((where, f"{value!r} is not of type 'string'"))
        elif key == "type":
            if isinstance(value, str):
                if value not in _SIMPLE_TYPES:
                    errors.append((where, f"{value!r} is not valid under any of the given schemas"))
            elif not (isinstance(value, list) and value and all(isinstance(v, str) and v in _SIMPLE_TYPES for v in value) and len(set(value)) == len(value)):
                return False
        elif key == "properties":
            if not isinstance(value, dict):
                errors.append((where, f"{value!r} is not of type 'object'"))
            elif not all(_plain_errors(sub, f"{where}/{name}", errors) for name, sub in value.items()):
                return False
        elif key in ("items", "additionalProperties"):
            if not _plain_errors(value, where, errors):
                return False
        elif key == "required":
            if not isinstance(value, list):
                errors.append((where, f"{value!r} is not of type 'array'"))
                continue
            errors.extend((f"{where}/{i}", f"{v!r} is not of type 'string'") for i, v in enumerate(value) if not isinstance(v, str))
            if len(set(map(_key, value))) != len(value):
                errors.append((where, f"{value!r} has non-unique elements"))
        elif key in ("enum", "examples"):
            if not isinstance(value, list):
                errors.append((where, f"{value!r} is not of type 'array'"))
        elif key in _COUNT_KEYWORDS:
            if type(value) is int:
                if value < 0:
                    errors.append((where, f"{value!r} is less than the minimum of 0"))
            elif type(value) is float:  # 2.0 is an integer to JSON Schema, 2.5 is not: jsonschema decides
                return False
            else:
                errors.append((where, f"{value!r} is not of type 'integer'"))
        elif key in _NUMBER_KEYWORDS:
            if type(value) not in (int, float):
                errors.append((where, f"{value!r} is not of type 'number'"))
        elif key not in ("default", "const"):
            return False
    return True


@lru_cache(maxsize=1024)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


def _check_call(call: tuple[str, Any, str], tools: dict[str, tuple[_Tool, dict]], path: str, issues: list[Issue]) -> None:
    name, arguments, style = call
    if style == "native":
        if "\n" in name or name != name.strip():
            issues.append(Issue("call-roundtrip", f"{path}.metadata", f"tool name {name!r} would not parse back as one line"))
        text = arguments
        try:
            arguments = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            issues.append(Issue("arguments-not-object", f"{path}.content", f"call arguments are not JSON ({exc.msg})"))
            return
        if may_hold_long_number(text):
            arguments = json.loads(text)  # exact: orjson reads an integer beyond 64 bits as a float
    if not isinstance(arguments, dict):
        issues.append(Issue("arguments-not-object", f"{path}.content", f"call arguments are a {type(arguments).__name__}, not an object"))
        return
    declared_tool = tools.get(name)
    if declared_tool is None:
        declared = ", ".join(tools) or "none"
        issues.append(Issue("undeclared-tool", path, f"call to {name!r}, which is not declared (declared: {declared})"))
        return
    tool, function = declared_tool
    for key in tool.required:
        if key not in arguments:
            issues.append(Issue("missing-argument", path, f"call to {name!r} lacks required argument {key!r}"))
    if tool.properties is None:
        return
    for key, value in arguments.items():
        if key not in tool.properties:
            issues.append(Issue("unknown-argument", path, f"call to {name!r} passes {key!r}, which the tool does not declare"))
        elif (check := tool.checks.get(key)) is not None and not check(value):
            schema = function["parameters"]["properties"][key]  # this row's, with its own description
            issues.append(Issue("argument-type", f"{path}.{key}", f"{key}={json.dumps(value, ensure_ascii=False)[:60]} does not match {json.dumps(schema, ensure_ascii=False)[:80]}"))
