"""Read a generated assistant turn back into its text, reasoning and tool calls, per template family.

Each GLM-4 template family writes a tool call its own way, and a model trained on it answers the same
way; ``parse_turn`` reads that text (what follows the ``<|assistant|>`` tag, up to the next role tag)
the way the family's inference parsers do:

- ``glm-4-9b-chat``, ``glm-4-9b-chat-v2``: ``NAME\\n{json arguments}`` for a call, ``\\nTEXT`` for
  an answer (the template writes the metadata, empty for an answer, then a newline). This is what
  GLM-4's own OpenAI-style server reads: first line the name, the rest JSON (GLM-4 issue #768).
- ``glm-4-0414``: the same with a space after the name, ``NAME \\n{json}``.
- ``glm-4.5``, ``glm-4.6``: ``\\n<think>REASONING</think>``, then optional text, then one or more
  ``<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n...</tool_call>`` blocks. The
  template writes a string value raw and any other value as JSON, so a value is typed back by the
  declared tool's JSON Schema, as vLLM's and sglang's glm45 parsers do: a ``string`` parameter keeps
  the raw text (``"007"`` stays a string), other declared types are JSON-decoded, and a parameter
  with no declared type is JSON when it parses as JSON, else a string.

For the native families (4-9b-chat, 0414) a turn is a call when its first line is a tool name: a
declared tool's name, or any word without spaces followed by a line of arguments. Anything else is
an answer, even one that lacks the leading newline the template writes (a model that drifted). A
turn shaped like a call whose arguments do not parse is a ``Turn`` with ``error`` set and no call.

Unlike vLLM, a ``glm-4.5`` string value keeps its surrounding whitespace (the template writes the
value as is, so stripping would change it), and a call block with text that is neither a key nor a
value, a key given twice, or a block left open is an error rather than silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from glmdata import families as _families

__all__ = ["FAMILIES", "Call", "CallFormatError", "Turn", "family_of", "json_equal", "parse_turn"]

#: The template families whose call format ``parse_turn`` reads: every one of ``glmdata.families``.
FAMILIES: tuple[str, ...] = tuple(_families.FAMILIES)
# Template names that are another name of a family (the official file names).
_ALIASES = {"glm-4-9b-0414": "glm-4-0414", "glm-4-32b-0414": "glm-4-0414", "glm4-0414": "glm-4-0414"}

_TOOL_CALL, _TOOL_CALL_END = "<tool_call>", "</tool_call>"
_THINK, _THINK_END = "<think>", "</think>"
_ARGUMENT = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_MISSING = object()


class CallFormatError(ValueError):
    """An unknown template family was asked for."""


@dataclass(frozen=True)
class Call:
    """One tool call: the tool's name and its arguments as a JSON object."""

    name: str
    arguments: dict[str, Any]


@dataclass
class Turn:
    """A generated assistant turn, read back.

    ``content``: the answer text (without the newline the template puts first; ``glm-4.5``: stripped,
    as the template writes it). ``reasoning``: the ``<think>`` text (``None`` when empty or absent).
    ``calls``: the tool calls that parsed, in order. ``error``: why a call in the turn did not parse
    (``None`` when every call parsed, or the turn is an answer).
    """

    content: str
    reasoning: str | None = None
    calls: list[Call] = field(default_factory=list)
    error: str | None = None

    @property
    def has_call(self) -> bool:
        """Whether the model wrote a tool call, parseable or not."""
        return bool(self.calls) or self.error is not None


def family_of(name: str | _families.Family) -> str:
    """The family of a template name or ``glmdata.families.Family`` (``glm-4-9b-chat.generation`` -> ``glm-4-9b-chat``,
    ``glm-4-9b-0414`` -> ``glm-4-0414``); raises ``CallFormatError`` naming the known families."""
    if isinstance(name, _families.Family):
        return name.name
    base = name.removesuffix(".jinja").removesuffix(".generation")
    base = _ALIASES.get(base, base)
    if base not in FAMILIES:
        raise CallFormatError(f"unknown template family {name!r}; known: {', '.join(FAMILIES)}")
    return base


def parse_turn(text: str, family: str | _families.Family, tools: Sequence[Mapping[str, Any]] | None = None) -> Turn:
    """Read ``text``, what the model wrote after ``<|assistant|>`` (up to the next role tag), as
    ``family`` writes a turn. ``tools`` are the declared tools (``{"type": "function", "function":
    {...}}`` or bare ``{"name", "parameters"}``): the native families use their names to tell a
    one-line call from an answer, ``glm-4.5``/``glm-4.6`` their parameter schemas to type values."""
    fam = _families.FAMILIES[family_of(family)]
    functions = _functions(tools)
    if fam.calls == "metadata":  # NAME\n{json}
        return _parse_native(text, functions)
    return _parse_xml(text, functions)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values: numbers by value (``1 == 1.0``) but never booleans (``true`` is
    not ``1``), objects regardless of key order, everything else by type and value."""
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


# --- native: NAME\n{json} ---------------------------------------------------------------------


def _parse_native(text: str, functions: dict[str, Mapping[str, Any]]) -> Turn:
    if not text or text.startswith("\n"):
        return Turn(content=text[1:])
    first, newline, rest = text.partition("\n")
    # glm-4-0414 writes a space after the name; GLM-4's own server strips the line too
    name = first.strip()
    if not _is_name(name) or (not newline and name not in functions):
        return Turn(content=text)
    if not rest.strip():
        return Turn(content="", error=f"tool call {name!r} has no arguments after its name")
    try:
        arguments = _loads(rest)
    except ValueError as e:
        return Turn(content="", error=f"tool call {name!r}: the arguments are not JSON ({_json_error(e)})")
    if not isinstance(arguments, dict):
        return Turn(
            content="", error=f"tool call {name!r}: the arguments are {_json_type(arguments)}, not a JSON object"
        )
    return Turn(content="", calls=[Call(name, arguments)])


def _is_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() for c in name)


def _json_error(e: ValueError) -> str:
    msg = getattr(e, "msg", None)
    pos = getattr(e, "pos", None)
    return f"{msg} at character {pos}" if msg is not None else str(e)


# --- glm-4.5 / glm-4.6: <think>, text, <tool_call> blocks -------------------------------------


def _parse_xml(text: str, functions: dict[str, Mapping[str, Any]]) -> Turn:
    reasoning: str | None = None
    rest = text.lstrip()
    if rest.startswith(_THINK):
        inner, closed, after = rest[len(_THINK) :].partition(_THINK_END)
        if not closed:  # cut inside the reasoning (max_new_tokens)
            return Turn(content="", reasoning=inner.strip() or None)
        reasoning, rest = inner.strip() or None, after
    start = rest.find(_TOOL_CALL)
    if start < 0:
        return Turn(content=rest.strip(), reasoning=reasoning)
    turn = Turn(content=rest[:start].strip(), reasoning=reasoning)
    while start >= 0:
        end = rest.find(_TOOL_CALL_END, start)
        if end < 0:
            turn.error = f"tool call {len(turn.calls) + 1} is not closed with {_TOOL_CALL_END}"
            break
        call = _xml_call(rest[start + len(_TOOL_CALL) : end], functions)
        if isinstance(call, str):
            turn.error = f"tool call {len(turn.calls) + 1}: {call}"
            break
        turn.calls.append(call)
        start = rest.find(_TOOL_CALL, end)
    return turn


def _xml_call(block: str, functions: dict[str, Mapping[str, Any]]) -> Call | str:
    """One ``<tool_call>`` block's call, or what is wrong with it."""
    cut = min((i for i in (block.find("\n"), block.find("<arg_key>")) if i >= 0), default=len(block))
    name = block[:cut].strip()
    if not _is_name(name):
        return f"{name!r} is not a tool name" if name else "no tool name"
    properties = _properties(functions.get(name))
    arguments: dict[str, Any] = {}
    pos = cut
    for match in _ARGUMENT.finditer(block, cut):
        if block[pos : match.start()].strip():
            return f"{name}: unexpected text {_clip(block[pos : match.start()])!r} between its arguments"
        key, raw = match.group(1), match.group(2)
        if key in arguments:
            return f"{name}: argument {key!r} is given twice"
        arguments[key] = _typed(raw, properties.get(key))
        pos = match.end()
    if block[pos:].strip():
        return f"{name}: unexpected text {_clip(block[pos:])!r} after its arguments"
    return Call(name, arguments)


def _clip(text: str, n: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "..."


def _typed(raw: str, schema: Any) -> Any:
    """A ``<arg_value>`` as the value it was rendered from: JSON unless the schema says string."""
    types = _schema_types(schema)
    try:
        value = _loads(raw)
    except ValueError:
        return raw
    if types is not None and "string" in types and not _allows(types - {"string"}, value):
        return raw  # a string parameter keeps the text, even "42" or "true"
    return value


def _loads(text: str) -> Any:
    """Strict JSON (``NaN`` and ``Infinity`` are not JSON); integers of any size kept exactly."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _allows(types: set[str], value: Any) -> bool:
    kind = _json_type_name(value)
    return kind in types or (kind == "integer" and "number" in types)


def _schema_types(schema: Any) -> set[str] | None:
    """The JSON types a parameter schema allows, or ``None`` when it does not say."""
    if not isinstance(schema, Mapping):
        return None
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
        return set(declared)
    for keyword in ("anyOf", "oneOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list) and branches:
            types: set[str] = set()
            for branch in branches:
                branch_types = _schema_types(branch)
                if branch_types is None:
                    return None
                types |= branch_types
            return types
    for keyword in ("enum", "const"):
        if keyword in schema:
            values = schema[keyword] if keyword == "enum" else [schema[keyword]]
            if isinstance(values, list) and values:
                return {_json_type_name(v) for v in values}
    return None


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}.get(type(value), "unknown")


def _json_type(value: Any) -> str:
    kind = _json_type_name(value)
    return {"object": "an object", "array": "an array", "integer": "a number", "null": "null"}.get(kind, f"a {kind}")


# --- declared tools ---------------------------------------------------------------------------


def _functions(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    """Declared functions by name (tools as ``{"type", "function"}`` or bare, as 0414's template takes them)."""
    out: dict[str, Mapping[str, Any]] = {}
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        inner = tool.get("function")
        function: Mapping[str, Any] = inner if isinstance(inner, Mapping) else tool
        name = function.get("name")
        if isinstance(name, str):
            out.setdefault(name, function)
    return out


def _properties(function: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if function is None:
        return {}
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    return properties if isinstance(properties, Mapping) else {}
