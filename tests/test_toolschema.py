"""glmdata.toolschema: a tool's parameters schema, valid or not, and call arguments against it.

jsonschema (Draft 2020-12) is the reference: hypothesis holds both answers equal to it, on schemas
of the keywords tool declarations use and on keyword soup; then the cases real data has, and what
the plain walk must spare (importing jsonschema for the usual schemas).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from glmdata.jsontext import canonical, loads
from glmdata.toolschema import ArgumentProblem, tool_schema


def reference_problem(parameters: dict[str, Any]) -> str | None:
    """What jsonschema says of the schema (keys sorted, as toolschema sees them: with more than
    one error, jsonschema picks one, and the order of keys may change its pick)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    parameters = loads(canonical(parameters))
    if parameters.get("type", "object") != "object":
        return f"parameters must describe an object, not {parameters.get('type')!r}"
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        return f"not a valid JSON Schema at {'/'.join(map(str, exc.path)) or 'root'}: {exc.message}"
    return None


def reference_arguments(parameters: dict[str, Any], arguments: dict[str, Any]) -> list[ArgumentProblem]:
    """The findings for a valid schema, each argument's value checked by jsonschema."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(parameters)
    problems = [ArgumentProblem("missing-argument", k) for k in parameters.get("required", []) if k not in arguments]
    properties = parameters.get("properties")
    if properties is not None:
        for key, value in arguments.items():
            if key not in properties:
                problems.append(ArgumentProblem("unknown-argument", key))
            elif not validator.evolve(schema=properties[key]).is_valid(value):
                problems.append(ArgumentProblem("argument-type", key))
    return problems


def problem(parameters: dict[str, Any]) -> str | None:
    return tool_schema(parameters).problem


def findings(parameters: dict[str, Any], arguments: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.code, p.argument) for p in tool_schema(parameters).check_arguments(arguments)]


# ---------------------------------------------------------------- is the schema valid

# keyword soup: the keywords the plain walk knows, and some it leaves to jsonschema, with values
# of every shape, right and wrong
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["string", "object", "str", "", "a"]),
    st.lists(st.sampled_from(["string", "integer", "a", "a"]), max_size=3),
)
_keywords = st.sampled_from(
    [
        "type", "description", "title", "$comment", "format", "enum", "const", "examples", "required",
        "default", "minLength", "pattern", "$ref", "anyOf", "items", "properties", "additionalProperties",
    ]
)  # fmt: skip
_schemas = st.recursive(
    st.dictionaries(_keywords, _values, max_size=4),
    lambda inner: st.dictionaries(
        _keywords,
        st.one_of(_values, inner, st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)),
        max_size=4,
    ),
    max_leaves=8,
)


@settings(max_examples=600, deadline=None)
@given(_schemas)
def test_schema_problem_is_what_jsonschema_says(schema: dict) -> None:
    """Where the plain walk is sure (valid, or one error), its answer, place and words are
    jsonschema's; elsewhere jsonschema answers."""
    for parameters in ({"type": "object", "properties": {"a": schema}}, {**schema, "type": "object"}):
        assert problem(parameters) == reference_problem(parameters), parameters


def test_the_usual_tool_schema_is_valid_and_the_broken_ones_are_worded_as_jsonschema_words_them() -> None:
    usual = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "城市"},
            "days": {"type": ["integer", "null"], "default": 3},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert problem(usual) is None
    assert problem({"type": "object", "required": ["a", "a"]}) == (
        "not a valid JSON Schema at required: ['a', 'a'] has non-unique elements"
    )
    # Glaive's one broken declaration (row 655): required given per shape, inside a property
    broken = {"type": "object", "properties": {"dimensions": {"type": "object", "required": {"circle": ["radius"]}}}}
    assert problem(broken) == (
        "not a valid JSON Schema at properties/dimensions/required: {'circle': ['radius']} is not of type 'array'"
    )
    # two errors: jsonschema picks which to tell
    assert problem({"type": "object", "required": 5, "description": 3}).startswith("not a valid JSON Schema at ")
    assert problem({"type": "array", "items": {"type": "string"}}) == "parameters must describe an object, not 'array'"
    assert problem({"type": "object", "properties": {"unit": {"type": "string", "pattern": "("}}}) is not None  # regex


def test_the_usual_schemas_need_no_jsonschema() -> None:
    """The plain walk pays only if jsonschema stays unimported for what tool declarations
    usually hold: valid schemas, Glaive's broken one, and checking arguments against them."""
    code = """if True:
        import sys
        from glmdata.toolschema import tool_schema
        usual = {"type": "object", "properties": {"city": {"type": "string", "description": "c"},
                 "unit": {"type": "string", "enum": ["C", "F"]}, "days": {"type": ["integer", "null"]},
                 "at": {"type": "string", "format": "date"},
                 "tags": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "number"}}}}},
                 "required": ["city"], "additionalProperties": False}
        assert tool_schema(usual).problem is None
        assert tool_schema(usual).check_arguments({"city": 1, "tags": [{"n": "x"}], "x": 0})
        broken = {"type": "object", "properties": {"d": {"type": "object", "required": {"circle": ["radius"]}}}}
        assert tool_schema(broken).problem
        print("jsonschema" in sys.modules)
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


# ---------------------------------------------------------------- do the arguments fit

_type_names = st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "null"])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([1.0, 0.5, -2.0]), st.sampled_from(["a", "b", ""])
)
_argument_schemas = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(_type_names, st.lists(_type_names, min_size=1, max_size=2, unique=True)),
            "enum": st.lists(_scalars, max_size=3),
            "const": _scalars,
            "description": st.just("d"),
            "format": st.just("date"),
        },
    )
    | st.booleans(),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "type": _type_names,
            "items": inner,
            "properties": st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
            "required": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True),
            "additionalProperties": inner,
        },
    ),
    max_leaves=6,
)
_arguments = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(_argument_schemas, _arguments, st.lists(st.sampled_from(["x", "y", "z"]), max_size=2, unique=True))
def test_check_arguments_is_what_jsonschema_says(schema, value, required) -> None:
    parameters = {"type": "object", "properties": {"x": schema, "y": {"type": "string"}}, "required": required}
    arguments = {"x": value, "w": 1}
    assert problem(parameters) is None
    expected = reference_arguments(parameters, arguments)
    assert tool_schema(parameters).check_arguments(arguments) == expected, (schema, value)


def test_check_arguments_in_order_missing_then_by_argument() -> None:
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city", "unit"],
    }
    assert findings(parameters, {"days": 2.0, "hours": 3, "unit": "K"}) == [
        ("missing-argument", "city"),
        ("unknown-argument", "hours"),
        ("argument-type", "unit"),
    ]  # 2.0 is an integer to JSON Schema
    assert findings(parameters, {"city": "Rome", "unit": "C", "days": True}) == [("argument-type", "days")]
    assert findings({"type": "object"}, {"anything": 1}) == []  # no properties: nothing is unknown
    assert findings({"type": "object", "properties": {"n": {"enum": [1, "a"]}}}, {"n": 1.0}) == []
    assert findings({"type": "object", "properties": {"n": {"enum": [1]}}}, {"n": True}) == [("argument-type", "n")]


def test_the_nulls_the_null_fields_repair_keeps_are_schema_values() -> None:
    """``default: null``, ``const: null``, null in ``enum`` and ``examples`` (what the repair
    keeps of an Arrow-merged schema): a valid schema, whose null means what jsonschema says."""
    parameters = {
        "type": "object",
        "properties": {
            "unit": {"type": ["string", "null"], "enum": ["C", None], "default": None, "examples": [None]},
            "none": {"const": None},
        },
    }
    assert problem(parameters) is None and reference_problem(parameters) is None
    for arguments in ({"unit": None, "none": None}, {"unit": "K", "none": 0}, {"unit": "C", "none": False}):
        assert findings(parameters, arguments) == [
            (p.code, p.argument) for p in reference_arguments(parameters, arguments)
        ], arguments
    assert findings(parameters, {"unit": "K", "none": 0}) == [("argument-type", "unit"), ("argument-type", "none")]


def test_arguments_follow_refs_into_defs() -> None:
    """Generated tool schemas (pydantic, OpenAI SDKs) put enums in $defs and point at them."""
    parameters = {
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {"unit": {"$ref": "#/$defs/Unit"}},
        "required": ["unit"],
    }
    assert problem(parameters) is None
    assert findings(parameters, {"unit": "K"}) == [("argument-type", "unit")]
    assert findings(parameters, {"unit": "C"}) == []


def test_unresolvable_refs_are_not_guessed() -> None:
    for ref in ("#/$defs/Nowhere", "https://example.com/unit.json"):
        assert findings({"type": "object", "properties": {"unit": {"$ref": ref}}}, {"unit": "C"}) == []


def test_a_broken_schema_checks_what_it_can() -> None:
    """The broken property checks nothing; the others still check their arguments, alone."""
    parameters = {"type": "object", "required": 5, "properties": {"a": {"type": 5}, "b": {"type": "string"}}}
    assert problem(parameters) is not None
    assert findings(parameters, {"a": 1, "b": 2}) == [("argument-type", "b")]
    assert findings({"type": "array", "properties": {"b": {"type": "string", "minLength": 2}}}, {"b": "x"}) == [
        ("argument-type", "b")
    ]  # a property the walk leaves to jsonschema, in a schema that is no object's


def test_deep_schemas_are_walked() -> None:
    """400 levels of nested properties (tests/README.md: validated and kept like any schema)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(400):
        schema = {"type": "object", "properties": {"x": schema}, "description": "level"}
    parameters = {"type": "object", "properties": {"deep": schema}}
    assert problem(parameters) is None
    value: Any = 1
    for _ in range(400):
        value = {"x": value}
    assert findings(parameters, {"deep": value}) == [("argument-type", "deep")]


# ---------------------------------------------------------------- worked out once per structure


def test_schemas_that_differ_only_in_descriptions_are_worked_out_once() -> None:
    """Descriptions vary row by row in real data (translations, replicas); names and types repeat."""
    first = {"type": "object", "description": "天气", "properties": {"city": {"type": "string", "description": "城市"}}}
    second = {"type": "object", "description": "weather", "properties": {"city": {"type": "string", "title": "c"}}}
    assert tool_schema(first) is tool_schema(second)
    assert tool_schema(first) is not tool_schema({"type": "object", "properties": {"city": {"type": "integer"}}})


def test_only_description_texts_are_left_out() -> None:
    """A property named "description" is a property; a description that is no text is an
    error; a description inside a const or an enum is a value to match."""
    named = {"type": "object", "properties": {"description": {"type": "string"}}}
    assert findings(named, {"description": 3}) == [("argument-type", "description")]
    assert problem({"type": "object", "properties": {"description": "a string"}}) is not None
    assert problem({"type": "object", "properties": {"a": {"type": "string", "description": 3}}}) == (
        "not a valid JSON Schema at properties/a/description: 3 is not of type 'string'"
    )
    const = {"type": "object", "properties": {"b": {"const": {"description": "x"}}}}
    assert findings(const, {"b": {"description": "x"}}) == []
    assert findings(const, {"b": {"description": "y"}}) == [("argument-type", "b")]


@settings(max_examples=300, deadline=None)
@given(_argument_schemas, _arguments, st.text(max_size=6), st.text(max_size=6))
def test_answers_do_not_depend_on_the_descriptions_seen_before(schema, value, first, second) -> None:
    def answers(description: str) -> tuple[str | None, list[ArgumentProblem]]:
        # a description inside a const is a value to match, not an annotation
        properties = {"a": schema, "b": {"const": {"description": description}, "description": description}}
        parameters = {"type": "object", "description": description, "properties": properties}
        schema_ = tool_schema(parameters)
        return schema_.problem, schema_.check_arguments({"a": value, "b": {"description": second}})

    expected = answers(second)
    answers(first)
    assert answers(second) == expected
    assert expected[1] == reference_arguments(
        {"type": "object", "properties": {"a": schema, "b": {"const": {"description": second}}}},
        {"a": value, "b": {"description": second}},
    )
