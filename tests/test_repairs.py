"""One test per repair in ``glmdata.repairs.REPAIRS``.

Each proves three things: the repair fires on the broken input, under its own name and at the
right path, and yields the expected canonical row; it is silent on clean data; and with the repair
switched off (``--no-repair NAME``) the row is rejected with ``disabled-repair`` instead of being
fixed silently or slipping through.
"""

from __future__ import annotations

import json

import pytest
from conftest import call, codes, msg, repair_names, tool, tool_row

from glmdata.convert import Options, Result, convert_row
from glmdata.repairs import REPAIRS


def convert(row: dict, **options) -> Result:
    return convert_row(row, Options(**options))


def assert_repaired(row: dict, name: str, paths: list[str], expected: dict | None = None, **options) -> Result:
    """The row converts cleanly, ``name`` fired exactly at ``paths``, and switched off it rejects."""
    result = convert(row, **options)
    assert result.ok, [i.to_dict() for i in result.issues]
    assert [p for n, p in result.repairs if n == name] == paths
    if expected is not None:
        assert result.row == expected
    off = convert(row, disabled_repairs=frozenset({name}), **options)
    assert off.rejected and off.row is None
    assert codes(off) == ["disabled-repair"]
    assert off.issues[0].path == paths[0]
    assert f"the {name} repair is switched off" in off.issues[0].message
    return result


def assert_silent(row: dict, name: str, **options) -> Result:
    result = convert(row, **options)
    assert result.ok, [i.to_dict() for i in result.issues]
    assert name not in repair_names(result)
    assert not convert(row, disabled_repairs=frozenset({name}), **options).rejected
    return result


def glaive(*turns: tuple[str, str], **extra) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


def glaive_call(arguments_text: str | None = None) -> str:
    return arguments_text or json.dumps({"name": "get_weather", "arguments": {"location": "Beijing"}})


def glaive_tool_row(call_text: str | None = None, tools=None) -> dict:
    return glaive(
        ("human", "What is the weather in Beijing?"),
        ("function_call", glaive_call(call_text)),
        ("observation", '{"temperature": 20}'),
        ("gpt", "It is 20 degrees in Beijing."),
        tools=[tool()] if tools is None else tools,
    )


EXPECTED_TOOL_ROW = tool_row()


def test_every_repair_has_a_test() -> None:
    tested = {name[len("test_repair_") :].replace("_", "-") for name in globals() if name.startswith("test_repair_")}
    assert tested == set(REPAIRS)


# ---------------------------------------------------------------------------------------- null-fields


def test_repair_null_fields() -> None:
    """What a JSONL written through datasets/Arrow looks like: every key on every message."""
    schema = {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "city", "enum": None},
            "unit": None,  # a property another row's tool had: merged in as null
        },
        "required": ["location"],
    }
    row = {
        "messages": [
            {
                "role": "system",
                "content": "",
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "description": "get_weather tool", "parameters": schema},
                    }
                ],
                "metadata": None,
                "loss": None,
            },
            {
                "role": "user",
                "content": "What is the weather in Beijing?",
                "tools": None,
                "metadata": None,
                "loss": None,
            },
            {
                "role": "assistant",
                "content": '{"location": "Beijing"}',
                "tools": None,
                "metadata": "get_weather",
                "loss": None,
            },
            {"role": "observation", "content": '{"temperature": 20}', "tools": None, "metadata": None, "loss": None},
            {
                "role": "assistant",
                "content": "It is 20 degrees in Beijing.",
                "tools": None,
                "metadata": None,
                "loss": None,
            },
        ]
    }
    result = assert_repaired(
        row,
        "null-fields",
        [
            "messages[0].tools[0].function.parameters.properties.location.enum",
            "messages[0].tools[0].function.parameters.properties.unit",
            "messages[0].metadata",
            "messages[0].loss",
            "messages[1].tools",
            "messages[1].metadata",
            "messages[1].loss",
            "messages[2].tools",
            "messages[2].loss",
            "messages[3].tools",
            "messages[3].metadata",
            "messages[3].loss",
            "messages[4].tools",
            "messages[4].metadata",
            "messages[4].loss",
        ],
        EXPECTED_TOOL_ROW,
    )
    assert result.issues == []
    # metadata: null must never reach the template (it prints the text "None")
    assert all("metadata" not in m or m["metadata"] == "get_weather" for m in result.row["messages"])
    assert_silent(EXPECTED_TOOL_ROW, "null-fields")


def test_null_inside_call_arguments_and_results_is_data() -> None:
    row = glaive_tool_row(
        json.dumps({"name": "get_weather", "arguments": {"location": "Beijing", "unit": None}}),
        tools=[
            tool(
                properties={"location": {"type": "string"}, "unit": {"type": ["string", "null"]}}, required=["location"]
            )
        ],
    )
    result = assert_silent(row, "null-fields")
    assert json.loads(result.row["messages"][2]["content"]) == {"location": "Beijing", "unit": None}
    chatglm3 = {
        "tools": [tool()],
        "conversations": [
            {"role": "user", "content": "weather?"},
            {
                "role": "tool",
                "name": "get_weather",
                "parameters": {"location": "Beijing"},
                "observation": {"temperature": None},
            },
            {"role": "assistant", "content": "unknown"},
        ],
    }
    result = assert_silent(chatglm3, "null-fields")
    assert result.row["messages"][3] == msg("observation", '{"temperature": null}')


def _arrow_schema() -> tuple[dict, dict, list[str]]:
    """A parameters schema as Arrow merges it with other rows' (source), what the repair makes of
    it, and where (after ``parameters``) it removes a null."""
    source = {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "city", "default": None, "enum": None, "items": None},
            "unit": {"type": ["string", "null"], "enum": ["C", None], "examples": [None, {"x": None}]},
            "mode": {"const": None, "default": {"level": None}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "number"}, "m": None}}},
            # parameters of other rows' tools, merged in as null: names, whatever they are
            "default": None,
            "content": None,
            "arguments": None,
            "properties": None,
        },
        "required": None,
    }
    repaired = {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "city", "default": None},
            "unit": {"type": ["string", "null"], "enum": ["C", None], "examples": [None, {"x": None}]},
            "mode": {"const": None, "default": {"level": None}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "number"}}}},
        },
    }
    removed = [
        ".properties.location.enum",
        ".properties.location.items",
        ".properties.tags.items.properties.m",
        ".properties.default",
        ".properties.content",
        ".properties.arguments",
        ".properties.properties",
        ".required",
    ]
    return source, repaired, removed


def _schema_row(parameters: dict, tools_as=list) -> dict:
    declared = {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": parameters}}
    tools = tools_as([declared]) if tools_as is not str else json.dumps([declared])
    return {"messages": [{"role": "system", "content": "", "tools": tools}, *tool_row()["messages"][1:]]}


@pytest.mark.parametrize(
    "tools_as",
    [list, str, lambda tools: [json.dumps(t) for t in tools]],
    ids=["list", "json-string", "tool-json-string"],
)
def test_null_fields_in_tool_schemas(tools_as) -> None:
    """Arrow merges tool schemas across rows: other rows' parameters come as null, and so do
    keywords this schema lacks (``required``, ``items``, ``enum``). They go, wherever the tools
    were (objects, a tools string, a tool string), while a null that is a value of the schema
    stays: ``default: null``, ``const: null``, and what default, const, enum and examples hold.
    A parameter named "default" whose schema is null goes: in ``properties`` keys are names."""
    source, repaired, removed = _arrow_schema()
    where = "messages[0].tools[0].function.parameters"
    expected = _schema_row(repaired)
    result = assert_repaired(_schema_row(source, tools_as), "null-fields", [where + r for r in removed], expected)
    assert result.issues == []  # the schema is valid: today's invalid-tool-schema is gone
    assert result.row["messages"][0]["tools"][0]["function"]["parameters"]["properties"]["location"]["default"] is None
    assert_silent(expected, "null-fields")  # the kept nulls are kept on the way back, too
    # counted once per row, in the report, like every repair
    from glmdata.report import Report

    report = Report()
    report.add(result)
    assert report.repairs["null-fields"] == 1 and report.to_dict()["repairs"]["null-fields"]["examples"] == [0]


def test_null_parameters_of_a_glaive_tools_string() -> None:
    """Glaive's tools are a JSON string: one dumped from Arrow-merged data has its nulls inside."""
    source, repaired, removed = _arrow_schema()
    bare = {"name": "get_weather", "description": "d", "parameters": source}
    row = glaive_tool_row(tools=json.dumps([bare]))
    expected = _schema_row(repaired)
    assert_repaired(row, "null-fields", [f"tools[0].parameters{r}" for r in removed], expected)


# ---------------------------------------------------------------------------------------- tools


def test_repair_tools_json_string() -> None:
    row = glaive(("human", "hi"), ("gpt", "hello"), tools=json.dumps([tool()]))
    expected = {
        "messages": [{"role": "system", "content": "", "tools": [tool()]}, msg("user", "hi"), msg("assistant", "hello")]
    }
    result = assert_repaired(row, "tools-json-string", ["tools"], expected)
    assert result.repairs == [("tools-json-string", "tools")]
    assert_silent(glaive(("human", "hi"), ("gpt", "hello"), tools=[tool()]), "tools-json-string")
    # a tools string that is not JSON is rejected with the reason, never read as "no tools"
    broken = convert(glaive(("human", "hi"), ("gpt", "hello"), tools='[{"name": "get_weather",'))
    assert broken.rejected and codes(broken) == ["tools-invalid-json"] and broken.issues[0].path == "tools"
    # JSON, but not a list of tools
    for value in ('"get_weather"', "5", "true"):
        odd = convert(glaive(("human", "hi"), ("gpt", "hello"), tools=value))
        assert odd.rejected and codes(odd) == ["tools-not-list"] and odd.issues[0].path == "tools"
    on_message = convert(
        {"messages": [{"role": "system", "content": "s", "tools": 5}, msg("user", "hi"), msg("assistant", "hello")]}
    )
    assert codes(on_message) == ["tools-not-list"] and on_message.issues[0].path == "messages[0].tools"


@pytest.mark.parametrize("empty", ["", "[]", " [ ] ", [], "null"], ids=repr)
def test_repair_empty_tools(empty) -> None:
    row = glaive(("human", "hi"), ("gpt", "hello"), tools=empty)
    expected = {"messages": [msg("user", "hi"), msg("assistant", "hello")]}  # no tools key, no empty system
    result = assert_repaired(row, "empty-tools", ["tools"], expected)
    assert result.repairs == [("empty-tools", "tools")]
    # on a GLM-4 message, too
    messages_row = {
        "messages": [
            {"role": "system", "content": "Be brief.", "tools": empty},
            msg("user", "hi"),
            msg("assistant", "hello"),
        ]
    }
    assert_repaired(
        messages_row,
        "empty-tools",
        ["messages[0].tools"],
        {"messages": [msg("system", "Be brief."), msg("user", "hi"), msg("assistant", "hello")]},
    )
    assert_silent(glaive(("human", "hi"), ("gpt", "hello")), "empty-tools")  # no tools key: nothing was empty
    # a system message that only carried them goes with them, as part of the repair
    only_tools = {
        "messages": [{"role": "system", "content": "", "tools": empty}, msg("user", "hi"), msg("assistant", "hello")]
    }
    result = assert_repaired(only_tools, "empty-tools", ["messages[0].tools", "messages[0]"], expected)
    assert result.issues == []  # not empty-content


def test_empty_tools_system_message_goes_and_calls_keep_their_place() -> None:
    """The builder keeps each call's parsed arguments by message index: removing the system
    message moves them; tools declared elsewhere land on the system message that is left."""
    from glmdata import formats
    from glmdata.builder import MessagesBuilder
    from glmdata.repairs import Fixer

    user, _, observation, answer = tool_row()["messages"][1:]
    empty_system = {"role": "system", "content": "", "tools": "[]"}
    row = {
        "tools": [tool()],  # a json-style call: the builder parses it (call-style)
        "messages": [empty_system, msg("system", "Be brief."), user, msg("assistant", _JSON_CALL), observation, answer],
    }
    fx = Fixer()
    builder = MessagesBuilder(fx)
    formats.FORMATS["messages"].to_messages(row, fx, builder)
    built = builder.build()
    assert built["messages"][0] == {"role": "system", "content": "Be brief.", "tools": [tool()]}
    assert built["messages"][1:] == tool_row()["messages"][1:]
    assert builder.calls == {2: {"location": "Beijing"}}
    assert [a for a in fx.applied if a[0] == "empty-tools"] == [
        ("empty-tools", "messages[0].tools"),
        ("empty-tools", "messages[0]"),
    ]
    # a user message whose tools were empty stays (a system message with text: test_repair_empty_tools)
    kept = convert({"messages": [msg("user", "", tools=[]), msg("assistant", "hello")]})
    assert kept.row == {"messages": [msg("user", ""), msg("assistant", "hello")]}
    assert kept.repairs == [("empty-tools", "messages[0].tools")] and codes(kept) == ["empty-content"]


def test_null_tools_end_as_no_tools_key() -> None:
    """``tools: null`` (Arrow) goes the same way as empty tools, reported as the null it was."""
    result = convert(glaive(("human", "hi"), ("gpt", "hello"), tools=None))
    assert result.ok and result.repairs == [("null-fields", "tools")]
    assert result.row == {"messages": [msg("user", "hi"), msg("assistant", "hello")]}


def test_repair_duplicate_tools() -> None:
    """The same tool declared twice, identically: the second copy goes (the template would render
    both); one name declared twice differently is the duplicate-tool-name error (test_checks)."""
    twice = tool_row(tool(), tool("get_time"), tool())
    expected = tool_row(tool(), tool("get_time"))
    result = assert_repaired(twice, "duplicate-tools", ["messages[0].tools[2]"], expected)
    assert result.issues == []
    # declared on the row and again on the system message
    both = {"tools": [tool()], "messages": tool_row()["messages"]}
    assert_repaired(both, "duplicate-tools", ["messages[0].tools[0]"], EXPECTED_TOOL_ROW)
    # in a Glaive tools string, bare
    glaive_twice = glaive_tool_row(tools=json.dumps([tool()["function"]] * 2))
    assert_repaired(glaive_twice, "duplicate-tools", ["tools[1]"], EXPECTED_TOOL_ROW)
    # key order is not a difference
    reordered = tool()
    reordered["function"] = dict(reversed(reordered["function"].items()))
    assert_repaired(tool_row(tool(), reordered), "duplicate-tools", ["messages[0].tools[1]"], EXPECTED_TOOL_ROW)
    assert_silent(expected, "duplicate-tools")
    other = convert(tool_row(tool(), tool(description="other")))
    assert "duplicate-tools" not in repair_names(other) and codes(other) == ["duplicate-tool-name"]


def test_repair_bare_tool() -> None:
    bare = tool()["function"]
    row = glaive_tool_row(tools=[bare])
    assert_repaired(row, "bare-tool", ["tools[0]"], EXPECTED_TOOL_ROW)
    assert_silent(glaive_tool_row(tools=[tool()]), "bare-tool")
    # a tools string holding one bare object (not a list) is read as a list of one
    single = convert(glaive_tool_row(tools=json.dumps(bare)))
    assert single.ok and single.row == EXPECTED_TOOL_ROW
    assert single.repairs[:2] == [("tools-json-string", "tools"), ("bare-tool", "tools[0]")]
    # a tool that is neither shape is rejected with what it has
    odd = convert(glaive_tool_row(tools=[{"title": "get_weather"}]))
    assert odd.rejected and codes(odd) == ["bad-tool"] and odd.issues[0].path == "tools[0]"
    assert "title" in odd.issues[0].message


@pytest.mark.parametrize(
    ("shape", "path"),
    [
        ({"name": "get_weather", "args": {"location": "shanghai"}}, "tools[0].args"),  # GLM-4 finetune README
        (
            {"func_call": "get_weather", "parameters": {"location": "shanghai"}},
            "tools[0].parameters",
        ),  # ChatGLM3 README
    ],
)
def test_repair_example_tool_schema(shape: dict, path: str) -> None:
    row = {
        "tools": [shape],
        "conversations": [
            {"role": "user", "content": "weather in Shanghai?"},
            {"role": "tool", "name": "get_weather", "parameters": {"location": "Shanghai"}, "observation": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
    }
    result = assert_repaired(row, "example-tool-schema", [path])
    assert result.row["messages"][0] == {
        "role": "system",
        "content": "",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                },
            }
        ],
    }
    assert [(i.code, i.path) for i in result.issues] == [("inferred-schema", path)]
    assert result.issues[0].severity == "warning"
    assert convert(row, strict=True).rejected  # a guessed schema is a warning: --strict rejects it
    clean = {**row, "tools": [tool()]}
    assert convert(clean).issues == []
    assert_silent(clean, "example-tool-schema")


def test_example_values_of_every_json_type() -> None:
    shape = {"name": "f", "args": {"s": "x", "i": 3, "n": 1.5, "b": True, "l": [1], "o": {"k": 1}, "z": None}}
    result = convert(glaive(("human", "hi"), ("gpt", "hello"), tools=[shape]))
    parameters = result.row["messages"][0]["tools"][0]["function"]["parameters"]
    assert parameters["properties"] == {
        "s": {"type": "string"},
        "i": {"type": "integer"},
        "n": {"type": "number"},
        "b": {"type": "boolean"},
        "l": {"type": "array"},
        "o": {"type": "object"},
    }
    assert parameters["required"] == ["s", "i", "n", "b", "l", "o"]
    # a null example tells no type: removed as a null before the schema is guessed
    assert ("null-fields", "tools[0].args.z") in result.repairs


# ---------------------------------------------------------------------------------------- call arguments


def test_repair_python_literal_args() -> None:
    """ms-swift PR #10169: arguments written as Python (single quotes, True/None) are not JSON."""
    schema = tool(
        properties={
            "location": {"type": "string"},
            "metric": {"type": "boolean"},
            "unit": {"type": ["string", "null"]},
        },
        required=["location"],
    )
    row = glaive_tool_row(
        "{'name': 'get_weather', 'arguments': {'location': 'Beijing', 'metric': True, 'unit': None}}", tools=[schema]
    )
    result = assert_repaired(row, "python-literal-args", ["conversations[1].value"])
    assert result.row["messages"][2] == call("get_weather", {"location": "Beijing", "metric": True, "unit": None})
    assert result.row["messages"][2]["content"] == '{"location": "Beijing", "metric": true, "unit": null}'
    # OpenAI arguments string in Python syntax
    openai = {
        "messages": [
            msg("user", "What is the weather in Beijing?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{'location': 'Beijing'}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 20}'},
            msg("assistant", "It is 20 degrees in Beijing."),
        ],
        "tools": [tool()],
    }
    assert_repaired(openai, "python-literal-args", ["messages[1].tool_calls[0].function.arguments"], EXPECTED_TOOL_ROW)
    assert_silent(glaive_tool_row(), "python-literal-args")
    # neither JSON nor a Python literal: rejected as a bad call, with the path
    broken = convert(glaive_tool_row("{name: get_weather"))
    assert broken.rejected and codes(broken) == ["bad-call"] and broken.issues[0].path == "conversations[1].value"


def test_repair_arguments_json_string() -> None:
    text = json.dumps({"name": "get_weather", "arguments": json.dumps({"location": "Beijing"})})
    assert_repaired(
        glaive_tool_row(text), "arguments-json-string", ["conversations[1].value.arguments"], EXPECTED_TOOL_ROW
    )
    assert_silent(glaive_tool_row(), "arguments-json-string")
    # OpenAI arguments are a JSON string by definition: parsing them is not a repair
    openai = {
        "messages": [
            msg("user", "What is the weather in Beijing?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Beijing"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 20}'},
            msg("assistant", "It is 20 degrees in Beijing."),
        ],
        "tools": [tool()],
    }
    assert assert_silent(openai, "arguments-json-string").row == EXPECTED_TOOL_ROW
    # a JSON string that holds no object is rejected, not passed on
    scalar = convert(glaive_tool_row(json.dumps({"name": "get_weather", "arguments": "[1, 2]"})))
    assert scalar.rejected and codes(scalar) == ["arguments-not-object"]


# ---------------------------------------------------------------------------------------- roles

_SYSTEM = {"role": "system", "content": "", "tools": [tool()]}
_JSON_CALL = json.dumps({"name": "get_weather", "arguments": {"location": "Beijing"}})


def _alias_rows(alias: str, canonical: str) -> tuple[dict, dict]:
    """A row with ``alias`` where ``canonical`` belongs, and the row it must become."""
    if canonical == "user":
        return {"messages": [msg(alias, "hi"), msg("assistant", "hello")]}, {
            "messages": [msg("user", "hi"), msg("assistant", "hello")]
        }
    if canonical == "assistant":
        return {"messages": [msg("user", "hi"), msg(alias, "hello")]}, {
            "messages": [msg("user", "hi"), msg("assistant", "hello")]
        }
    if canonical == "observation":
        messages = tool_row()["messages"]
        messages[3] = msg(alias, messages[3]["content"])
        return {"messages": messages}, tool_row()
    messages = tool_row()["messages"]  # function_call: a call written as {"name", "arguments"} text
    messages[2] = msg(alias, _JSON_CALL)
    return {"messages": messages}, tool_row()


@pytest.mark.parametrize(
    ("alias", "canonical", "index"),
    [
        ("human", "user", 0),
        ("users", "user", 0),
        ("USER", "user", 0),
        ("User ", "user", 0),
        ("gpt", "assistant", 1),
        ("bot", "assistant", 1),
        (" Assistant ", "assistant", 1),
        ("ASSISTANT", "assistant", 1),
        ("tool", "observation", 3),
        ("function", "observation", 3),
        ("Observation", "observation", 3),
        ("function_call", "function_call", 2),
        ("Function Call", "function_call", 2),
    ],
)
def test_repair_role_alias(alias: str, canonical: str, index: int) -> None:
    row, expected = _alias_rows(alias, canonical)
    result = assert_repaired(row, "role-alias", [f"messages[{index}].role"], expected, from_format="messages")
    assert all(m["role"] in ("system", "user", "assistant", "observation") for m in result.row["messages"])
    assert_silent(expected, "role-alias", from_format="messages")


def test_role_alias_native_names_of_a_format_are_not_repairs() -> None:
    """Glaive's human/gpt/function_call/observation and OpenAI's tool are the formats' own names."""
    assert_silent(glaive_tool_row(), "role-alias")
    openai = {
        "messages": [
            msg("user", "What is the weather in Beijing?"),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Beijing"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 20}'},
            msg("assistant", "It is 20 degrees in Beijing."),
        ],
        "tools": [tool()],
    }
    assert assert_silent(openai, "role-alias").row == EXPECTED_TOOL_ROW
    # in a Glaive row, "users" and "bot" are typos: repaired
    typo = glaive(("users", "hi"), ("bot", "hello"))
    assert_repaired(
        typo,
        "role-alias",
        ["conversations[0].from", "conversations[1].from"],
        {"messages": [msg("user", "hi"), msg("assistant", "hello")]},
    )


def test_unknown_role_is_rejected_with_the_known_ones() -> None:
    result = convert({"messages": [msg("narrator", "hi"), msg("assistant", "hello")]})
    assert result.rejected and codes(result) == ["unknown-role"]
    assert result.issues[0].path == "messages[0].role"
    assert "'narrator'" in result.issues[0].message and "human" in result.issues[0].message


# ---------------------------------------------------------------------------------------- calls


def test_repair_function_call() -> None:
    result = assert_repaired(glaive_tool_row(), "function-call", ["conversations[1]"], EXPECTED_TOOL_ROW)
    assert result.repairs == [("function-call", "conversations[1]")]
    assert_silent(glaive(("human", "hi"), ("gpt", "hello")), "function-call")
    # a function_call turn whose JSON has no name is rejected, with the path
    nameless = convert(glaive_tool_row(json.dumps({"arguments": {"location": "Beijing"}})))
    assert nameless.rejected and codes(nameless) == ["bad-call"] and nameless.issues[0].path == "conversations[1].value"


def test_repair_tools_to_system() -> None:
    on_user = {
        "messages": [
            {"role": "user", "content": "What is the weather in Beijing?", "tools": [tool()]},
            call(),
            msg("observation", '{"temperature": 20}'),
            msg("assistant", "It is 20 degrees in Beijing."),
        ]
    }
    assert_repaired(on_user, "tools-to-system", ["messages[0].tools"], EXPECTED_TOOL_ROW)
    # with a system message already there, the tools join it and its text is kept
    with_system = {"messages": [msg("system", "Be brief."), *on_user["messages"]]}
    result = assert_repaired(with_system, "tools-to-system", ["messages[1].tools"])
    assert result.row["messages"][0] == {"role": "system", "content": "Be brief.", "tools": [tool()]}
    assert len(result.row["messages"]) == 5
    assert_silent(EXPECTED_TOOL_ROW, "tools-to-system")


@pytest.mark.parametrize("style", ["native", "json"])
def test_repair_call_style(style: str) -> None:
    """Both ways: a native call in a json-style run and a json-style call in a native run."""
    native_row = tool_row()
    json_row = tool_row()
    json_row["messages"][2] = msg("assistant", _JSON_CALL)
    source, expected = (json_row, native_row) if style == "native" else (native_row, json_row)
    assert_repaired(source, "call-style", ["messages[2].content"], expected, call_style=style)
    assert_silent(expected, "call-style", call_style=style)


def test_call_style_applies_to_every_format() -> None:
    """A Glaive ``gpt`` turn written as a JSON-style call is a call: written in the chosen style."""
    row = glaive(
        ("human", "What is the weather in Beijing?"),
        ("gpt", _JSON_CALL),
        ("observation", '{"temperature": 20}'),
        ("gpt", "It is 20 degrees in Beijing."),
        tools=[tool()],
    )
    assert_repaired(row, "call-style", ["conversations[1].value"], EXPECTED_TOOL_ROW)
    kept = convert(row, call_style="json")
    assert kept.row["messages"][2] == msg("assistant", _JSON_CALL) and "call-style" not in repair_names(kept)


def test_repairs_are_counted_once_per_row_in_the_report() -> None:
    from glmdata.report import Report

    report = Report()
    report.add(convert(glaive(("users", "a"), ("bot", "b"), ("users", "c"), ("bot", "d"))))
    assert report.repairs == {"role-alias": 1}
    assert report.to_dict()["repairs"]["role-alias"] == {
        "rows": 1,
        "description": REPAIRS["role-alias"],
        "examples": [0],
    }


def test_disabled_repair_names_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown repair"):
        Options(disabled_repairs=frozenset({"no-such-repair"}))
    assert Options(disabled_repairs=frozenset(REPAIRS)).disabled_repairs == frozenset(REPAIRS)
