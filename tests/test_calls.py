"""glmdata.calls: every family's generated turn parses back to the exact call the real template rendered.

The templates are the official files (``glmdata/templates`` for glm-4-9b-chat v1/v2, copies of
``../shared/templates`` in ``tests/fixtures/calls`` for the others), rendered by transformers' own
chat-template code; each assistant turn is cut out of the rendering and parsed back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from glmdata.calls import FAMILIES, Call, CallFormatError, Turn, family_of, json_equal, parse_turn

FIXTURES = Path(__file__).parent / "fixtures" / "calls"
TAGS = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<tool_call>", "</tool_call>", "<think>", "</think>")


def template(family: str) -> str:
    from glmdata.render import load_template

    if family.startswith("glm-4-9b-chat"):
        return load_template(family).text
    name = {"glm-4-0414": "glm-4-9b-0414"}.get(family, family)
    return (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")


def assistant_turn(family: str, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
    """What the model writes for the last message: the rendering with it, less the generation prompt."""
    from transformers.utils.chat_template_utils import render_jinja_template

    text = template(family)
    (full,), _ = render_jinja_template([messages], tools=tools, chat_template=text)
    (prompt,), _ = render_jinja_template([messages[:-1]], tools=tools, chat_template=text, add_generation_prompt=True)
    assert full.startswith(prompt)
    return full[len(prompt) :]


def call_messages(family: str, name: str, arguments: dict[str, Any], tools: list[dict]) -> list[dict[str, Any]]:
    """A user question and the call, as the family's template takes them."""
    user = {"role": "user", "content": "question"}
    if family in ("glm-4.5", "glm-4.6"):
        call = {"type": "function", "function": {"name": name, "arguments": arguments}}
        return [user, {"role": "assistant", "content": "", "tool_calls": [call]}]
    native = {"role": "assistant", "metadata": name, "content": json.dumps(arguments, ensure_ascii=False)}
    if family == "glm-4-0414":
        return [user, native]
    return [
        {"role": "system", "content": "", "tools": tools},
        user,
        native,
    ]  # glm-4-9b-chat: tools on the system message


def tool_for(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool whose parameter schema declares each argument with its value's type."""
    properties = {key: {"type": schema_type(value)} for key, value in arguments.items()}
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": properties}}}


def schema_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}[type(value)]


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1`` is not ``1.0``, ``True`` is not ``1``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# --- strategies -------------------------------------------------------------------------------

LOOKS_LIKE_JSON = st.sampled_from(["007", "1", "-2.5", "1e3", "true", "false", "null", "[1, 2]", '{"a": 1}', " 3 ", ""])
TEXT = st.one_of(
    st.text(max_size=12).filter(lambda s: not any(tag in s for tag in TAGS) and "<|" not in s),
    st.text(alphabet="北京天气预报 ü\n\t\"'\\{}[]:,", max_size=8),
    LOOKS_LIKE_JSON,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits too
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
KEYS = st.text(min_size=1, max_size=10).filter(lambda s: not any(tag in s for tag in TAGS) and "<|" not in s)
ARGUMENTS = st.dictionaries(KEYS, VALUES, max_size=4)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)


# --- round trips through the real templates -----------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=40, deadline=None)
@given(name=NAMES, arguments=ARGUMENTS)
def test_a_rendered_call_parses_back_to_the_same_call(family, name, arguments):
    tools = [tool_for(name, arguments)]
    text = assistant_turn(family, call_messages(family, name, arguments, tools), tools)
    turn = parse_turn(text, family, tools)
    assert turn.error is None, (text, turn.error)
    assert turn.has_call and [c.name for c in turn.calls] == [name]
    assert same(turn.calls[0].arguments, arguments), text
    assert turn.content == ""


@pytest.mark.parametrize("family", ["glm-4.5", "glm-4.6"])
@settings(max_examples=40, deadline=None)
@given(arguments=ARGUMENTS, content=TEXT, reasoning=TEXT)
def test_glm45_text_reasoning_and_two_calls_parse_back(family, arguments, content, reasoning):
    """Text, reasoning and several calls in one turn; without schemas a value is JSON when it reads as JSON."""
    calls = [
        {"type": "function", "function": {"name": "first", "arguments": arguments}},
        {"type": "function", "function": {"name": "second", "arguments": {}}},
    ]
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning, "tool_calls": calls}
    text = assistant_turn(family, [{"role": "user", "content": "q"}, message])
    turn = parse_turn(text, family)  # no tools: no schema to type the values by
    assert turn.error is None
    assert turn.content == content.strip()
    assert turn.reasoning == (reasoning.strip() or None)
    assert [c.name for c in turn.calls] == ["first", "second"] and turn.calls[1].arguments == {}
    for key, value in arguments.items():
        parsed = turn.calls[0].arguments[key]
        if isinstance(value, str):
            try:
                expected = json.loads(value, parse_constant=lambda c: 1 / 0)
            except (ValueError, ZeroDivisionError):
                expected = value
            assert same(parsed, expected)
        else:
            assert same(parsed, value)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=30, deadline=None)
@given(content=TEXT.filter(lambda s: s.strip()))
def test_a_rendered_answer_parses_back_to_its_text(family, content):
    text = assistant_turn(family, [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}])
    turn = parse_turn(text, family, [tool_for("get_weather", {"city": "x"})])
    assert not turn.has_call and turn.error is None
    assert turn.content == (content.strip() if family in ("glm-4.5", "glm-4.6") else content)


def test_fixture_templates_equal_the_shared_ones():
    shared = SHARED / "templates"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not there (CI has it)")
    for path in FIXTURES.glob("*.jinja"):
        assert path.read_bytes() == (shared / path.name).read_bytes(), path.name


# --- typing glm-4.5 values by the schema ----------------------------------------------------------

TYPED = {
    "type": "function",
    "function": {
        "name": "f",
        "parameters": {
            "type": "object",
            "properties": {
                "s": {"type": "string"},
                "i": {"type": "integer"},
                "n": {"type": "number"},
                "b": {"type": "boolean"},
                "o": {"type": "object"},
                "a": {"type": "array"},
                "u": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "e": {"enum": ["1", "2"]},
                "nullable": {"type": ["string", "null"]},
            },
        },
    },
}


def one_call(**raw: str) -> str:
    pairs = "".join(f"\n<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>" for k, v in raw.items())
    return f"\n<think></think>\n<tool_call>f{pairs}\n</tool_call>"


@pytest.mark.parametrize(
    ("key", "raw", "typed", "untyped"),
    [
        ("s", "007", "007", "007"),  # not JSON (leading zero): a string either way
        ("s", "42", "42", 42),
        ("s", "true", "true", True),
        ("s", '{"a": 1}', '{"a": 1}', {"a": 1}),
        ("s", '"quoted"', '"quoted"', "quoted"),
        ("s", " spaced ", " spaced ", " spaced "),
        ("i", "3", 3, 3),
        ("i", "three", "three", "three"),  # not JSON: kept as text (the arguments then do not match)
        ("n", "3", 3, 3),
        ("n", "2.5", 2.5, 2.5),
        ("b", "false", False, False),
        ("o", '{"k": [1, null]}', {"k": [1, None]}, {"k": [1, None]}),
        ("a", '["x", 2]', ["x", 2], ["x", 2]),
        ("u", "5", 5, 5),
        ("u", "abc", "abc", "abc"),
        ("u", "true", "true", True),  # a boolean is not one of its types: the text
        ("e", "1", "1", 1),  # an enum of strings is a string
        ("nullable", "null", None, None),
        ("nullable", "NaN", "NaN", "NaN"),  # NaN is not JSON
    ],
)
def test_glm45_values_are_typed_by_the_declared_schema(key, raw, typed, untyped):
    assert same(parse_turn(one_call(**{key: raw}), "glm-4.5", [TYPED]).calls[0].arguments[key], typed)
    assert same(parse_turn(one_call(**{key: raw}), "glm-4.5").calls[0].arguments[key], untyped)


def test_bare_tools_are_read_too():
    bare = TYPED["function"]
    assert parse_turn(one_call(s="1"), "glm-4.6", [bare]).calls == [Call("f", {"s": "1"})]


# --- what is not a call, and calls that do not parse ------------------------------------------------


@pytest.mark.parametrize("family", ["glm-4-9b-chat", "glm-4-9b-chat-v2", "glm-4-0414"])
def test_native_answers_and_broken_calls(family):
    tools = [tool_for("get_weather", {"city": "x"})]
    assert parse_turn("\nIt is sunny.", family, tools) == Turn("It is sunny.")
    assert parse_turn("", family, tools) == Turn("")
    # an answer written without its leading newline stays an answer
    assert parse_turn("Sure, here it is\nsecond line", family, tools) == Turn("Sure, here it is\nsecond line")
    assert parse_turn("yes", family, tools) == Turn("yes")
    assert parse_turn("get_weather \n{}", family, tools).calls == [Call("get_weather", {})]
    cases = {
        "get_weather": "has no arguments after its name",  # a declared name alone: cut by max_new_tokens
        "get_weather\n": "has no arguments after its name",
        "get_weather\n{city": "the arguments are not JSON",
        'get_weather\n{"city": "Rome"} and more': "the arguments are not JSON (Extra data",
        'get_weather\n["Rome"]': "the arguments are an array, not a JSON object",
        "lookup\n42": "the arguments are a number, not a JSON object",  # undeclared, but shaped like a call
    }
    for text, error in cases.items():
        turn = parse_turn(text, family, tools)
        assert turn.has_call and not turn.calls and error in (turn.error or ""), (text, turn)


def test_glm45_broken_calls_say_what_is_wrong():
    cases = {
        "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>": "tool call 1 is not closed",
        "<tool_call>\n</tool_call>": "no tool name",
        "<tool_call>f\n<arg_key>a</arg_key>\n</tool_call>": "unexpected text '<arg_key>a</arg_key>'",
        "<tool_call>f\nhello\n<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>": "unexpected text 'hello'",
        "<tool_call>f\n<arg_key>a</arg_key><arg_value>1</arg_value><arg_key>a</arg_key><arg_value>2</arg_value></tool_call>": "given twice",
    }
    for text, error in cases.items():
        turn = parse_turn("\n<think></think>\n" + text, "glm-4.5")
        assert turn.has_call and not turn.calls and error in (turn.error or ""), (text, turn)
    # the call before a broken one is kept
    turn = parse_turn("<tool_call>g\n</tool_call><tool_call>f", "glm-4.5")
    assert turn.calls == [Call("g", {})] and "tool call 2 is not closed" in (turn.error or "")
    # cut inside the reasoning: no call, no error
    assert parse_turn("\n<think>still thinking", "glm-4.5") == Turn("", reasoning="still thinking")
    assert parse_turn("\n<think></think>\nplain", "glm-4.5") == Turn("plain")


def test_families_and_their_aliases():
    assert family_of("glm-4-9b-chat.generation") == "glm-4-9b-chat"
    assert family_of("glm-4-9b-chat-v2") == "glm-4-9b-chat-v2"
    assert family_of("glm-4-9b-0414.jinja") == "glm-4-0414"
    assert family_of("glm-4.6") == "glm-4.6"
    with pytest.raises(CallFormatError, match="known: glm-4-9b-chat, "):
        parse_turn("x", "qwen")


def test_json_equal_is_json_equality():
    assert json_equal({"a": 1, "b": [1.0, None]}, {"b": [1, None], "a": 1.0})
    assert not json_equal({"a": True}, {"a": 1})
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal("1", 1)
