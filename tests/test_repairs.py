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


# ---------------------------------------------------------------------------------------- xLAM / APIGen schemas


def _xlam_row(parameters: dict, **function: object) -> dict:
    declared = {"name": "get_weather", "description": "get_weather tool", "parameters": parameters, **function}
    return glaive_tool_row(tools=[{"type": "function", "function": declared}])


def _declared(result: Result) -> dict:
    return result.row["messages"][0]["tools"][0]["function"]


def test_repair_python_schema_types() -> None:
    """xLAM / APIGen schemas (LLaMA-Factory's reason_tool_use_demo_50) write Python type names:
    each becomes its JSON Schema type, also inside nested properties, items and anyOf."""
    parameters = {
        "type": "dict",
        "properties": {
            "location": {"type": "str", "description": "city"},
            "days": {"type": "int, optional", "default": "3"},
            "ratio": {"type": "float"},
            "metric": {"type": "bool, optional"},
            "names": {"type": "List[str]"},
            "pairs": {"type": "list", "items": {"type": "tuple"}},
            "extra": {"type": "Dict[str, Any]", "properties": {"note": {"anyOf": [{"type": "str"}, {"type": "None"}]}}},
            "anything": {"type": "any", "description": "whatever"},
            "ids": {"type": ["int", "null"]},
        },
        "required": ["location"],
    }
    expected = {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "city"},
            "days": {"type": "integer", "default": "3"},
            "ratio": {"type": "number"},
            "metric": {"type": "boolean"},
            "names": {"type": "array", "items": {"type": "string"}},
            "pairs": {"type": "array", "items": {"type": "array"}},
            "extra": {"type": "object", "properties": {"note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            "anything": {"description": "whatever"},
            "ids": {"type": ["integer", "null"]},
        },
        "required": ["location"],
    }
    where = "tools[0].function.parameters"
    paths = [
        f"{where}.type",
        *(f"{where}.properties.{name}.type" for name in ("location", "days", "ratio", "metric", "names")),
        f"{where}.properties.pairs.type",
        f"{where}.properties.pairs.items.type",
        f"{where}.properties.extra.type",
        f"{where}.properties.extra.properties.note.anyOf[0].type",
        f"{where}.properties.extra.properties.note.anyOf[1].type",
        f"{where}.properties.anything.type",
        f"{where}.properties.ids.type",
    ]
    result = assert_repaired(_xlam_row(parameters), "python-schema-types", paths)
    assert _declared(result)["parameters"] == expected
    assert_silent(glaive_tool_row(), "python-schema-types")
    # a name that means no type stays, and the schema check says where it is
    unknown = convert(_xlam_row({"type": "object", "properties": {"when": {"type": "datetime"}}}))
    assert unknown.rejected and codes(unknown)[0] == "invalid-tool-schema"
    assert "properties/when/type" in unknown.issues[0].message


def test_repair_bare_properties() -> None:
    """xLAM's parameters: a map of property schemas with no {type, properties} around it; not
    example values (they would be inferred as objects)."""
    bare = {"location": {"description": "city", "type": "str", "default": "Paris"}}
    result = assert_repaired(_xlam_row(bare), "bare-properties", ["tools[0].function.parameters"])
    assert _declared(result)["parameters"] == {
        "type": "object",
        "properties": {"location": {"description": "city", "type": "string", "default": "Paris"}},
    }
    assert "python-schema-types" in repair_names(result) and "example-tool-schema" not in repair_names(result)
    # a property named "type" is still a map of properties
    named_type = convert(_xlam_row({"type": {"type": "string", "description": "kind"}}))
    assert "bare-properties" in repair_names(named_type)
    assert _declared(named_type)["parameters"]["properties"] == {"type": {"type": "string", "description": "kind"}}
    # example values are not property schemas: inferred, as before
    examples = convert(_xlam_row({"location": "Paris"}))
    assert repair_names(examples).count("example-tool-schema") == 1 and "bare-properties" not in repair_names(examples)
    assert_silent(glaive_tool_row(), "bare-properties")


def test_repair_required_outside_parameters() -> None:
    parameters = {"type": "object", "properties": {"location": {"type": "string"}}}
    result = assert_repaired(
        _xlam_row(parameters, required=["location"]), "required-outside-parameters", ["tools[0].function.required"]
    )
    assert _declared(result) == {
        "name": "get_weather",
        "description": "get_weather tool",
        "parameters": {**parameters, "required": ["location"]},
    }
    # the same list in both places: the outer copy goes
    twice = convert(_xlam_row({**parameters, "required": ["location"]}, required=["location"]))
    assert (
        twice.ok and "required" not in _declared(twice) and _declared(twice)["parameters"]["required"] == ["location"]
    )
    # two different lists: which one is meant is unknown
    differ = convert(_xlam_row({**parameters, "required": []}, required=["location"]))
    assert differ.rejected and codes(differ) == ["bad-tool"] and differ.issues[0].path == "tools[0].function.required"
    # the missing argument is now seen
    missing = convert(
        glaive(
            ("human", "weather?"),
            ("function_call", json.dumps({"name": "get_weather", "arguments": {}})),
            ("observation", "sunny"),
            ("gpt", "Sunny."),
            tools=[{"name": "get_weather", "parameters": parameters, "required": ["location"]}],
        )
    )
    assert codes(missing) == ["missing-argument"]
    assert_silent(glaive_tool_row(), "required-outside-parameters")


def _bundled_row(content: str) -> dict:
    calls = [
        {
            "id": f"call_{k}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"location": city})},
        }
        for k, city in (("a", "Beijing"), ("b", "Paris"))
    ]
    return {
        "messages": [
            {"role": "user", "content": "Weather in Beijing and Paris?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "content": content},
            {"role": "assistant", "content": "Both sunny."},
        ],
        "tools": [tool()],
    }


def test_repair_bundled_tool_results() -> None:
    """One tool message with the results of all the parallel calls before it (a JSON list of
    {tool_call_id, name, content}), as in reason_tool_use_demo_50: one observation per call."""
    bundled = json.dumps(
        [
            {"tool_call_id": "call_a", "name": "get_weather", "content": "{'t': 20}"},
            {"tool_call_id": "call_b", "name": "get_weather", "content": {"t": 25}},
        ]
    )
    expected = {
        "messages": [
            {"role": "system", "content": "", "tools": [tool()]},
            msg("user", "Weather in Beijing and Paris?"),
            call("get_weather", {"location": "Beijing"}),
            msg("observation", "{'t': 20}"),
            call("get_weather", {"location": "Paris"}),
            msg("observation", '{"t": 25}'),
            msg("assistant", "Both sunny."),
        ]
    }
    assert_repaired(_bundled_row(bundled), "bundled-tool-results", ["messages[2].content"], expected)
    # a list that is not one result per call, named as the calls, is a result like any other
    other = json.dumps([{"name": "get_time", "content": "x"}, {"name": "get_weather", "content": "y"}])
    kept = assert_silent(_bundled_row(other), "bundled-tool-results")
    assert codes(kept) == ["call-without-observation"]
    assert_silent(_bundled_row("[1, 2]"), "bundled-tool-results")


# ---------------------------------------------------------------------------------------- reasoning


def test_repair_think_tags() -> None:
    row = {"instruction": "2+2?", "output": "<think>\nfour, surely\n</think>\n\n4"}
    expected = {"messages": [msg("user", "2+2?"), msg("assistant", "4", reasoning="four, surely")]}
    assert_repaired(row, "think-tags", ["output"], expected)
    assert_silent({"instruction": "tags?", "output": "Write <think> to start one."}, "think-tags")  # not at the start


def _reasoning_row() -> dict:
    return {
        "messages": [
            msg("user", "Weather in Beijing?"),
            {"role": "assistant", "content": "", "reasoning_content": "Look it up.", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Beijing"}}}
            ]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny.", "reasoning_content": "It said sunny."},
        ],
        "tools": [tool()],
    }  # fmt: skip


@pytest.mark.parametrize(("policy", "name"), [("text", "reasoning-as-text"), ("drop", "reasoning-dropped")])
def test_repair_reasoning_as_text(policy: str, name: str) -> None:
    """--template glm-4-9b-chat (no reasoning slot): the reasoning is written as text or dropped,
    counted at each message; switched off, the row is rejected."""
    result = convert(_reasoning_row(), template="glm-4-9b-chat", reasoning=policy)
    assert result.ok, [i.to_dict() for i in result.issues]
    assert [p for n, p in result.repairs if n == name] == ["messages[2].reasoning", "messages[4].reasoning"]
    written = json.loads(result.encoded)["messages"]
    assert result.row["messages"][4] == msg("assistant", "Sunny.", reasoning="It said sunny.")  # the internal row
    if policy == "text":
        assert written[2:] == [
            msg("assistant", "<think>Look it up.</think>"),
            call(),
            msg("observation", "sunny"),
            msg("assistant", "<think>It said sunny.</think>\nSunny."),
        ]
    else:
        assert written[2:] == [call(), msg("observation", "sunny"), msg("assistant", "Sunny.")]
    off = convert(_reasoning_row(), template="glm-4-9b-chat", reasoning=policy, disabled_repairs=frozenset({name}))
    assert off.rejected and codes(off) == ["disabled-repair"] and off.issues[0].path == "messages[2].reasoning"
    # a family with a slot, and rows without reasoning: nothing to do
    assert name not in repair_names(convert(_reasoning_row(), template="glm-4.5", reasoning=policy))
    assert name not in repair_names(convert(tool_row(), template="glm-4-9b-chat", reasoning=policy))


def test_repair_reasoning_dropped() -> None:
    result = convert(_reasoning_row(), template="glm-4-0414", reasoning="drop")
    assert result.ok and repair_names(result).count("reasoning-dropped") == 2
    assert "<think>" not in result.encoded.decode() and "reasoning" not in result.encoded.decode()
