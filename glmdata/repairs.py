"""Repairs: fixes for what is broken in real data, each named, counted, reported and switchable.

A converter calls :meth:`Fixer.apply` before it repairs something. With the repair switched off
(``--no-repair NAME``) the same call rejects the row instead, so nothing is ever fixed silently
and nothing broken slips through because a repair was disabled.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from pydantic import TypeAdapter

from glmdata.issues import Issue, reject, validate
from glmdata.jsontext import loads
from glmdata.models import Function, FunctionDict, ToolDict

REPAIRS: dict[str, str] = {
    "null-fields": "removed null values (injected by Arrow schema merging; metadata: null renders as 'None'), "
    "keeping a tool schema's default/const null and enum/examples members",
    "tools-json-string": "parsed tools given as a JSON string into a list",
    "empty-tools": 'removed empty tools ("", "[]", [], null), and a system message with empty content that only '
    "carried them: the template renders an empty tools header",
    "duplicate-tools": "removed a second, identical declaration of a tool",
    "bare-tool": "wrapped a bare {name, description, parameters} tool as {type: function, function: {...}}",
    "example-tool-schema": "inferred a parameter schema from example values ({name, args} / {func_call, parameters})",
    "python-schema-types": 'rewrote tool schema types written as Python names ("dict", "str", "int", "float", "bool", '
    '"list", "tuple", "List[str]", "str, optional", "any") as JSON Schema types',
    "bare-properties": "wrapped tool parameters given as a bare map of property schemas (xLAM) in "
    '{"type": "object", "properties": ...}',
    "required-outside-parameters": "moved a tool's required list written beside its parameters into them",
    "python-literal-args": "rewrote call arguments written as Python literals (single quotes, True/None) as JSON",
    "arguments-json-string": "parsed call arguments given as a JSON string into an object",
    "role-alias": "mapped a role alias or typo (human, users, gpt, bot, tool, function, case, spaces) to its role",
    "function-call": "turned a function call turn into an assistant tool call",
    "tools-to-system": "attached tools to the system message (created with empty content if missing)",
    "call-style": "rewrote a tool call in the chosen --call-style",
    "bundled-tool-results": "split one tool message holding the results of several parallel calls (a JSON list of "
    "{name, content}, in the calls' order) into one result per call",
    "think-tags": "moved <think>...</think> at the start of an assistant message's content into its reasoning",
    "reasoning-as-text": "wrote an assistant message's reasoning into its content, for a template with no "
    "reasoning slot (--reasoning text)",
    "reasoning-dropped": "dropped an assistant message's reasoning, for a template with no reasoning slot "
    "(--reasoning drop)",
}

CallStyle = str  # "native" | "json"


class Fixer:
    """Collects the repairs applied to one row; rejects the row when a needed repair is switched off."""

    __slots__ = ("applied", "disabled", "warnings")

    def __init__(self, disabled: frozenset[str] = frozenset()):
        self.disabled = disabled
        self.applied: list[tuple[str, str]] = []
        self.warnings: list[Issue] = []

    def apply(self, name: str, path: str, what: str) -> None:
        """Record repair ``name`` at ``path``; raise a rejection if that repair is switched off."""
        if name in self.disabled:
            raise reject("disabled-repair", path, f"{what}; the {name} repair is switched off")
        self.applied.append((name, path))


# ---------------------------------------------------------------------------------------- nulls

# Null is data (or the format's own value) under these keys: kept as is and not looked into.
# OpenAI writes `content: null` on every tool-call message; nulls inside arguments and tool
# results are the tool's data.
_KEEP_NULLS = frozenset({"arguments", "observation", "content"})


# In a JSON Schema (a tool's ``parameters``) null is a value under these keywords, whose values are
# data: kept as they are. Under the others it is Arrow's, as it is for each name of a map of schemas.
_SCHEMA_VALUES = frozenset({"default", "const", "enum", "examples"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def strip_nulls(value: Any, fx: Fixer, path: str = "") -> Any:
    """Drop every ``key: null`` from nested objects (not from lists, and not inside call arguments);
    in a tool's ``parameters``, as :func:`_strip_schema_nulls` says."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if item is None and key not in _KEEP_NULLS:
                fx.apply("null-fields", where, f"{where} is null")
            elif key in _KEEP_NULLS:
                out[key] = item
            else:
                out[key] = (_strip_schema_nulls if key == "parameters" else strip_nulls)(item, fx, where)
        return out
    if isinstance(value, list):
        return [strip_nulls(item, fx, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _strip_schema_nulls(schema: Any, fx: Fixer, path: str) -> Any:
    """``strip_nulls`` in a JSON Schema: ``default: null`` and ``const: null`` are kept, and so is
    what ``default``, ``const``, ``enum`` and ``examples`` hold; in ``properties`` (names to schemas)
    a name whatever it is (even "default") whose schema is null goes."""
    if isinstance(schema, list):
        return [_strip_schema_nulls(item, fx, f"{path}[{i}]") for i, item in enumerate(schema)]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, item in schema.items():
        where = f"{path}.{key}"
        if key in _SCHEMA_VALUES and (item is not None or key in ("default", "const")):
            out[key] = item
        elif item is None:
            fx.apply("null-fields", where, f"{where} is null")
        elif key in _SCHEMA_MAPS and isinstance(item, dict):
            out[key] = {}
            for name, sub in item.items():
                if sub is None:
                    fx.apply("null-fields", f"{where}.{name}", f"{where}.{name} is null")
                else:
                    out[key][name] = _strip_schema_nulls(sub, fx, f"{where}.{name}")
        else:
            out[key] = _strip_schema_nulls(item, fx, where)
    return out


# ---------------------------------------------------------------------------------------- roles

ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "user": "user",
    "users": "user",
    "human": "user",
    "humans": "user",
    "usr": "user",
    "assistant": "assistant",
    "assistants": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "observation": "observation",
    "observations": "observation",
    "tool": "observation",
    "function": "observation",
    "function_response": "observation",
    "tool_response": "observation",
    "ipython": "observation",
    "function_call": "function_call",
    "functioncall": "function_call",
    "tool_call": "function_call",
}


CANONICAL_ROLES: dict[str, str] = {r: r for r in ("system", "user", "assistant", "observation")}


def canonical_role(
    raw: Any, fx: Fixer, path: str, native: dict[str, str] = CANONICAL_ROLES, aliases: dict[str, str] = ROLE_ALIASES
) -> str:
    """Map a role name to system/user/assistant/observation/function_call.

    ``native`` holds the role names the format itself defines (Glaive's ``human``/``gpt``): they
    map silently. Anything else that maps (other aliases, case, stray spaces) is a ``role-alias``
    repair.
    """
    role = native.get(raw) if isinstance(raw, str) else None
    if role is not None:
        return role
    if not isinstance(raw, str):
        raise reject("unknown-role", path, f"role is {type(raw).__name__} {raw!r}, not a string")
    key = raw.strip().lower().replace(" ", "_").replace("-", "_")
    role = aliases.get(key)
    if role is None:
        known = ", ".join(sorted(set(aliases)))
        raise reject("unknown-role", path, f"unknown role {raw!r} (known: {known})")
    fx.apply("role-alias", path, f"role {raw!r} is not canonical")
    return role


# ---------------------------------------------------------------------------------------- JSON text


def loads_lenient(text: str, fx: Fixer, path: str) -> Any:
    """Parse JSON; fall back to a Python literal (single quotes, True/None), recorded as a repair.

    Raises ValueError when the text is neither.
    """
    try:
        return loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise ValueError(f"not valid JSON: {text[:80]!r}") from exc
    fx.apply("python-literal-args", path, "written as a Python literal, not JSON")
    return _jsonable(value, path)


def _jsonable(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, path) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, path) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} has no JSON equivalent")


def call_arguments(value: Any, fx: Fixer, path: str, *, string_is_normal: bool = False) -> dict:
    """Return call arguments as a dict; parse strings (JSON, or Python literals as a repair).

    ``string_is_normal`` is for formats (OpenAI) whose arguments are a JSON string by definition.
    """
    if isinstance(value, str):
        try:
            parsed = loads_lenient(value, fx, path)
        except ValueError as exc:
            raise reject("arguments-not-object", path, f"arguments are not JSON: {exc}") from None
        if not string_is_normal and isinstance(parsed, dict):
            fx.apply("arguments-json-string", path, "arguments given as a JSON string")
        value = parsed
    if not isinstance(value, dict):
        raise reject("arguments-not-object", path, f"arguments are a JSON {_json_type(value)}, not an object")
    return value


# A JSON-style call starts with this, exactly (no leading whitespace): callers on hot paths test
# ``text[:1] == JSON_CALL_START`` to skip parse_json_call (and the path it needs) for plain text.
JSON_CALL_START = "{"


def parse_json_call(content: str) -> tuple[str, Any] | None:
    """``(name, arguments)`` when the content is a JSON-style call ``{"name": ..., "arguments": ...}``."""
    if content[:1] != JSON_CALL_START or '"name"' not in content:
        return None
    try:
        value = loads(content)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and set(value) == {"name", "arguments"} and isinstance(value["name"], str):
        return value["name"], value["arguments"]
    return None


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


# ---------------------------------------------------------------------------------------- tools


def is_empty_tools(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and value.strip() in ("", "[]", "null"))


def normalize_tools(value: Any, fx: Fixer, path: str) -> list[ToolDict] | None:
    """Turn any tools value seen in real data into a list of ``{"type", "function"}`` dicts, or None."""
    if is_empty_tools(value):
        fx.apply("empty-tools", path, "tools are empty")
        return None
    if isinstance(value, str):
        try:
            parsed = loads(value)
        except json.JSONDecodeError as exc:
            raise reject(
                "tools-invalid-json", path, f"tools string is not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        if is_empty_tools(parsed):  # "[ ]", "[\n]": empty like "[]", and switched off like it
            fx.apply("empty-tools", path, "tools are empty")
            return None
        fx.apply("tools-json-string", path, "tools given as a JSON string")
        value = strip_nulls(parsed, fx, path) if "null" in value else parsed  # Arrow's, dumped
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise reject("tools-not-list", path, f"tools is a JSON {_json_type(value)}, not a list")
    return [normalize_tool(tool, fx, f"{path}[{i}]") for i, tool in enumerate(value)]


def _is_schema(parameters: Any) -> bool:
    if not isinstance(parameters, dict):
        return False
    if not parameters or "properties" in parameters:
        return True
    # a property named "type" in a bare map of properties (its value a schema, not a type name)
    return "type" in parameters and not (type(parameters["type"]) is dict and _is_properties_map(parameters))


def normalize_tool(tool: Any, fx: Fixer, path: str) -> ToolDict:
    """One tool in the canonical shape; bare and example-valued tools are repaired."""
    if isinstance(tool, str):
        try:
            parsed = loads(tool)
        except json.JSONDecodeError:
            raise reject("bad-tool", path, f"tool is a string that is not JSON: {tool[:60]!r}") from None
        fx.apply("tools-json-string", path, "tool given as a JSON string")
        tool = strip_nulls(parsed, fx, path) if "null" in tool else parsed
    if not isinstance(tool, dict):
        raise reject("bad-tool", path, f"tool is a JSON {_json_type(tool)}, not an object")
    kind = tool.get("type")
    if kind is not None or "function" in tool:
        if kind in ("python", "simple_browser", "cogview") and "function" not in tool:
            return {"type": kind}
        function = tool.get("function")
        if kind != "function" or not isinstance(function, dict):
            raise reject("bad-tool", path, f"tool has type {kind!r} but no function object")
        return {"type": "function", "function": _function(function, fx, f"{path}.function")}
    if "name" in tool or "func_call" in tool:
        fx.apply("bare-tool", path, "bare tool definition without {type, function}")
        return {"type": "function", "function": _function(tool, fx, path)}
    raise reject("bad-tool", path, f"tool has none of type/function/name (keys: {', '.join(map(str, tool)) or 'none'})")


def _function(function: dict, fx: Fixer, path: str) -> FunctionDict:
    function = dict(function)
    if "func_call" in function and "name" not in function:
        function = {"name": function.pop("func_call"), **function}
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise reject("bad-tool", f"{path}.name", "tool has no name")
    if "args" in function and "parameters" not in function:
        examples = function.pop("args")
        function["parameters"] = _infer_schema(examples, fx, f"{path}.args")
    elif "parameters" in function and not _is_schema(function["parameters"]):
        parameters = function["parameters"]
        if _is_properties_map(parameters):
            fx.apply("bare-properties", f"{path}.parameters", "parameters are a bare map of property schemas")
            function["parameters"] = {"type": "object", "properties": parameters}
        else:
            function["parameters"] = _infer_schema(parameters, fx, f"{path}.parameters")
    if "required" in function and type(function["required"]) is list:
        _move_required(function, fx, path)
    parameters = function.get("parameters")
    if type(parameters) is dict and parameters and _has_foreign_types(parameters):
        function["parameters"] = _json_types(parameters, fx, f"{path}.parameters")
    if not _plainly_function(function):
        validate(_FUNCTION, function, path)  # e.g. a description that is not text: rejected with its path
    return function  # type: ignore[return-value] # checked just above: a FunctionDict with any extra keys


def _plainly_function(function: dict) -> bool:
    """True when ``Function`` certainly accepts ``function`` (parsed JSON: exact types), sparing
    the usual tool a Pydantic round; otherwise ``validate`` decides and says what is wrong."""
    name = function["name"]  # checked by the caller: a non-blank string
    return (
        type(name) is str
        and type(function.get("description", "")) is str
        and type(function.get("parameters", _EMPTY)) is dict
    )


_EMPTY: dict = {}


_FUNCTION = TypeAdapter(Function)


def _infer_schema(examples: Any, fx: Fixer, path: str) -> dict:
    if not isinstance(examples, dict):
        raise reject("bad-tool", path, f"tool parameters are a JSON {_json_type(examples)}, not an object")
    fx.apply("example-tool-schema", path, "parameters hold example values, not a JSON Schema")
    fx.warnings.append(
        Issue(
            "inferred-schema",
            path,
            f"parameter schema inferred from example values for {', '.join(examples) or 'no'} arguments",
        )
    )
    properties = {key: ({"type": _json_type(v)} if v is not None else {}) for key, v in examples.items()}
    return {"type": "object", "properties": properties, "required": list(examples)}


# ------------------------------------------------------------------------------ xLAM / APIGen schemas

JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object", "null"})
# Python type names (and case variants of the JSON ones) as xLAM / APIGen tool schemas write them
_PYTHON_TYPES = {
    "dict": "object",
    "object": "object",
    "mapping": "object",
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "array": "array",
    "tuple": "array",
    "sequence": "array",
    "set": "array",
    "none": "null",
    "nonetype": "null",
    "null": "null",
}
_ANY = frozenset({"any", "typing.any"})
_GENERIC = re.compile(r"(?i)^(list|tuple|set|sequence|dict|mapping|optional)\[(.*)\]$")
# keywords of a property's schema: a parameters object whose every value is a schema made of them
# is a bare map of properties, not example values
_PROPERTY_KEYWORDS = frozenset(
    {"type", "description", "default", "enum", "items", "properties", "required", "examples", "title", "format",
     "minimum", "maximum", "minLength", "maxLength", "pattern", "anyOf", "oneOf", "const", "additionalProperties"}
)  # fmt: skip
# where a JSON Schema holds other schemas: one, a list of them, a map of names to them
_SUB_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
_SUB_LIST = ("prefixItems", "anyOf", "oneOf", "allOf", "items")
_SUB_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_RARE_SUBSCHEMAS = frozenset(_SUB_ONE + _SUB_LIST + _SUB_MAP) - {"properties", "items"}


def _is_properties_map(parameters: Any) -> bool:
    """Every value a property schema (a ``type`` or a ``description``, only schema keywords): the
    xLAM shape ``{"q": {"type": "str", "description": ...}}``, not example values."""
    return (
        isinstance(parameters, dict)
        and bool(parameters)
        and all(
            isinstance(sub, dict)
            and ("type" in sub or "description" in sub)
            and all(key in _PROPERTY_KEYWORDS for key in sub)
            for sub in parameters.values()
        )
    )


def _move_required(function: dict, fx: Fixer, path: str) -> None:
    """A ``required`` list beside ``parameters`` (APIGen rows) belongs inside them."""
    required = function["required"]
    parameters = function.get("parameters")
    if not isinstance(parameters, dict):
        return
    inner = parameters.get("required")
    if inner is not None and inner != required:
        raise reject(
            "bad-tool",
            f"{path}.required",
            f"required is given twice, differently: {required!r} beside the parameters and {inner!r} in them; "
            "keep the one in parameters",
        )
    fx.apply("required-outside-parameters", f"{path}.required", "required is written beside the parameters")
    del function["required"]
    if inner is None:
        function["parameters"] = {**parameters, "required": required}


def _has_foreign_types(schema: Any) -> bool:
    """True when a ``type`` somewhere in ``schema`` is not a JSON Schema type name. It runs on
    every declared tool and the usual schema has none: one walk that only reads, ``properties``
    and ``items`` looked up directly, the rarer keywords only when the schema has one."""
    if type(schema) is list:
        for item in schema:  # noqa: SIM110 - a loop, not a generator: one frame a level
            if _has_foreign_types(item):
                return True
        return False
    if type(schema) is not dict:
        return False
    kind = schema.get("type")
    if type(kind) is str:
        if kind not in JSON_TYPES:
            return True
    elif type(kind) is list and any(type(k) is str and k not in JSON_TYPES for k in kind):
        return True
    properties = schema.get("properties")
    if type(properties) is dict:
        for sub in properties.values():
            if type(sub) is dict and _has_foreign_types(sub):
                return True
    items = schema.get("items")
    if items is not None and _has_foreign_types(items):
        return True
    if _RARE_SUBSCHEMAS.isdisjoint(schema):
        return False
    for key, value in schema.items():
        if key in _SUB_MAP and key != "properties" and type(value) is dict:
            for sub in value.values():
                if _has_foreign_types(sub):
                    return True
        elif key in _RARE_SUBSCHEMAS and key not in _SUB_MAP and _has_foreign_types(value):
            return True
    return False


def python_type(name: str) -> dict | None:
    """The JSON Schema keywords a Python-style type name stands for (``{"type": "string"}``,
    ``{"type": "array", "items": {"type": "integer"}}`` for ``List[int]``, ``{}`` for ``any``), or
    None when it names no type glmdata knows."""
    text = name.strip()
    if text.lower().endswith(", optional"):  # docstring style: optional means it has a default
        text = text[: -len(", optional")].strip()
    key = text.lower()
    if key in _PYTHON_TYPES:
        return {"type": _PYTHON_TYPES[key]}
    if key in _ANY:
        return {}
    generic = _GENERIC.match(text)
    if generic is None:
        return None
    outer, inner = generic.group(1).lower(), generic.group(2).strip()
    if outer == "optional":
        return python_type(inner)
    if outer in ("dict", "mapping"):
        return {"type": "object"}
    if outer in ("list", "set", "sequence") and "," not in inner:
        items = python_type(inner)
        return {"type": "array", "items": items} if items else {"type": "array"}
    return {"type": "array"}  # Tuple[int, str], a list of several: an array, its items unsaid


def _json_types(schema: Any, fx: Fixer, path: str) -> Any:
    """``schema`` with each Python-style ``type`` rewritten as JSON Schema (``python-schema-types``),
    in every schema it holds; a name it does not know stays, for the checks to report."""
    if type(schema) is list:
        return [_json_types(item, fx, f"{path}[{i}]") for i, item in enumerate(schema)]
    if type(schema) is not dict:
        return schema
    out = {}
    for key, value in schema.items():
        where = f"{path}.{key}"
        if key == "type":
            replaced = _type_keywords(value)
            if replaced is not None:
                fx.apply("python-schema-types", where, f"type {value!r} is not a JSON Schema type")
                for name, keyword in replaced.items():
                    if name not in schema or name == "type":
                        out[name] = keyword
                continue
            out[key] = value
        elif key in _SUB_MAP and type(value) is dict:
            out[key] = {name: _json_types(sub, fx, f"{where}.{name}") for name, sub in value.items()}
        elif key in _SUB_ONE or key in _SUB_LIST:
            out[key] = _json_types(value, fx, where)
        else:
            out[key] = value
    return out


def _type_keywords(kind: Any) -> dict | None:
    """What replaces ``"type": kind`` when it is not JSON Schema but means a type; None to keep it."""
    if type(kind) is str:
        return None if kind in JSON_TYPES else python_type(kind)
    if type(kind) is list and kind and all(type(k) is str for k in kind) and any(k not in JSON_TYPES for k in kind):
        names = [k if k in JSON_TYPES else (python_type(k) or {}).get("type") for k in kind]
        if all(names):
            return {"type": list(dict.fromkeys(names))}
    return None
