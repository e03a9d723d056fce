"""One test per check code: it fires on a minimal bad row (at the right path, with the right
severity) and is silent on the clean version. Then the defects FIELD_NOTES §5 lists in the real
datasets, found where they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, call, chat_row, codes, msg, shared_file, tool, tool_row

from glmdata import checks
from glmdata.convert import Options, Result, convert_file, convert_row, convert_rows
from glmdata.issues import CODES
from glmdata.report import Report

# Codes that are not checks on a converted conversation: reading, source schema, repairs.
NOT_CHECKS = {
    "unmatched-tool-result",  # a reading error of OpenAI rows: tested in test_formats.py
    "invalid-json",
    "invalid-utf8",
    "not-an-object",
    "unknown-format",
    "truncated-input",
    "schema",
    "unknown-role",
    "tools-not-list",
    "tools-invalid-json",
    "bad-tool",
    "bad-call",
    "disabled-repair",
    "inferred-schema",
}
CHECK_CODES = sorted(set(CODES) - NOT_CHECKS)


def convert(row: dict, **options) -> Result:
    return convert_row(row, Options(**options))


def found(result: Result) -> list[tuple[str, str]]:
    return [(i.code, i.path) for i in result.issues]


def assert_fires(row: dict, code: str, path: str, **options) -> Result:
    """``code`` is the only finding, at ``path``; errors reject the row, warnings keep it."""
    result = convert(row, **options)
    assert found(result) == [(code, path)], [i.to_dict() for i in result.issues]
    assert result.rejected == (CODES[code][0] == "error")
    assert result.row is not None
    return result


def assert_clean(row: dict, **options) -> Result:
    result = convert(row, **options)
    assert result.issues == [] and result.ok, [i.to_dict() for i in result.issues]
    return result


def with_messages(row: dict, **changes: dict) -> dict:
    """A copy of ``row`` with messages replaced by index (``m2={...}``)."""
    messages = [dict(m) for m in row["messages"]]
    for key, value in changes.items():
        messages[int(key[1:])] = value
    return {"messages": messages}


def test_every_check_code_has_a_test() -> None:
    tested = {name[len("test_check_") :].replace("_", "-") for name in globals() if name.startswith("test_check_")}
    assert tested == set(CHECK_CODES)


def test_every_other_code_is_asserted_in_another_test_file() -> None:
    """Reading, schema and repair codes are tested where they arise (test_io, test_repairs, ...)."""
    assert set(CODES) >= NOT_CHECKS
    here = Path(__file__).resolve()
    text = "".join(p.read_text(encoding="utf-8") for p in here.parent.glob("test_*.py") if p != here)
    assert [code for code in sorted(NOT_CHECKS) if f'"{code}"' not in text] == []


# ---------------------------------------------------------------------------------------- errors


def test_check_empty_content() -> None:
    assert_fires(chat_row("hi", ""), "empty-content", "messages[1].content")
    result = assert_fires(chat_row("   \n", "hello"), "empty-content", "messages[0].content")
    assert "whitespace only" in result.issues[0].message
    assert_fires(
        {"messages": [msg("system", ""), msg("user", "hi"), msg("assistant", "hello")]},
        "empty-content",
        "messages[0].content",
    )
    assert_clean(chat_row("hi", "hello"))
    # the one empty message the template is meant to get: a system message that only carries tools
    assert tool_row()["messages"][0]["content"] == ""
    assert_clean(tool_row())
    # ... but whitespace there is not empty, and renders as a second system block
    assert_fires(
        with_messages(tool_row(), m0={"role": "system", "content": " ", "tools": [tool()]}),
        "empty-content",
        "messages[0].content",
    )


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\U000e0001"])
def test_invisible_content_is_empty(invisible: str) -> None:
    """Format characters (Unicode Cf), alone or with whitespace: the template renders them, the
    model would learn an answer no one sees."""
    code = f"U+{ord(invisible):04X}"
    for content in (invisible, invisible * 3, f" {invisible}\n", f"\n{invisible} \u200b\t"):
        result = assert_fires(chat_row("hi", content), "empty-content", "messages[1].content")
        assert result.issues[0].message.startswith("assistant content is only invisible characters (")
        assert code in result.issues[0].message
    # on a system message that carries tools, too: it would render a second system block
    with_tools = with_messages(tool_row(), m0={"role": "system", "content": invisible, "tools": [tool()]})
    assert_fires(with_tools, "empty-content", "messages[0].content")
    # one visible character is enough, wherever it is
    for content in (f"hi{invisible}", f"{invisible}hi", f" {invisible} 好", f"{invisible}\n《书》"):
        assert_clean(chat_row("hi", content))


def test_invisible_content_is_named_by_its_characters() -> None:
    result = assert_fires(chat_row("\ufeff \u200d\u200b\u200d", "hello"), "empty-content", "messages[0].content")
    assert result.issues[0].message == "user content is only invisible characters (U+200B, U+200D, U+FEFF)"
    many = "".join(map(chr, (0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF)))
    result = assert_fires(chat_row("hi", many), "empty-content", "messages[1].content")
    assert result.issues[0].message.endswith("(U+200B, U+200C, U+200D, U+200E, U+200F, ...)")


def test_contents_that_start_visible_are_not_looked_into(monkeypatch) -> None:
    """The cheap signal: a row whose contents all start with a printable character other than the
    space (Cf is not printable) needs no look at each; the others, only they, get one."""
    looked = []
    monkeypatch.setattr(checks, "_invisible", lambda text: looked.append(text) or False)
    for content in ("hello", "《书》", "😀", "{}", "a\u200b"):
        assert_clean(chat_row("hi", content))
    assert looked == []
    for content in ("\u200bhi", " hi", "\nhi", "\u3000hi"):
        assert_clean(chat_row("hi", content))
    assert looked == ["\u200bhi", " hi", "\nhi", "\u3000hi"]


def test_check_no_assistant() -> None:
    assert_fires({"messages": [msg("user", "hi")]}, "no-assistant", "messages")
    assert_fires(
        {"messages": [msg("system", "be nice"), msg("user", "hi"), msg("user", "anyone?")]}, "no-assistant", "messages"
    )
    assert_clean(chat_row("hi", "hello"))


def test_check_observation_without_call() -> None:
    """The real-data case (rows 64, 783, 874): the assistant wrote the call as prose."""
    prose = with_messages(tool_row(), m2=msg("assistant", 'Let me check.\nget_weather: {"location": "Beijing"}'))
    result = assert_fires(prose, "observation-without-call", "messages[3]")
    assert "follows assistant" in result.issues[0].message
    assert_fires(
        {"messages": [msg("observation", "sunny"), msg("assistant", "It is sunny.")]},
        "observation-without-call",
        "messages[0]",
    )
    assert_clean(tool_row())


def test_check_duplicate_tool_name() -> None:
    """One name, two different declarations: the template renders both; the call is checked
    against neither (the second would find its argument unknown)."""
    other = tool(properties={"city": {"type": "string"}}, description="other")
    result = assert_fires(tool_row(tool(), other), "duplicate-tool-name", "messages[0].tools[1]")
    assert result.issues[0].message == (
        "tool 'get_weather' is declared again, differing in description, parameters (first at messages[0].tools[0])"
    )
    assert "declare each tool name once" in result.issues[0].hint
    result = assert_fires(
        tool_row(tool(), tool("get_time"), tool(required=[])), "duplicate-tool-name", "messages[0].tools[2]"
    )
    assert "differing in parameters (first at messages[0].tools[0])" in result.issues[0].message
    # declared on the row and, otherwise, on the system message: both end on the system message
    both = {"tools": [tool(description="other")], "messages": tool_row()["messages"]}
    assert_fires(both, "duplicate-tool-name", "messages[0].tools[1]")
    # identical copies are merged (the duplicate-tools repair); other names are not duplicates
    assert_clean(tool_row(tool(), tool()))
    assert_clean(tool_row(tool(), tool("get_time")))


def test_check_undeclared_tool() -> None:
    result = assert_fires(with_messages(tool_row(), m2=call("get_time")), "undeclared-tool", "messages[2]")
    assert "'get_time'" in result.issues[0].message and "declared: get_weather" in result.issues[0].message
    no_tools = {"messages": tool_row()["messages"][1:]}
    assert "declared: none" in assert_fires(no_tools, "undeclared-tool", "messages[1]").issues[0].message
    assert_clean(tool_row())


@pytest.mark.parametrize("content", ["[1, 2]", '"Beijing"', "location=Beijing"])
def test_check_arguments_not_object(content: str) -> None:
    assert_fires(with_messages(tool_row(), m2=call(arguments=content)), "arguments-not-object", "messages[2].content")
    # a JSON-style call whose arguments are no object, in a json-style run
    as_json = with_messages(tool_row(), m2=msg("assistant", json.dumps({"name": "get_weather", "arguments": [1, 2]})))
    assert_fires(as_json, "arguments-not-object", "messages[2].content", call_style="json")
    assert_clean(tool_row())


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"location": {"type": 5}}},
        {"type": "array", "items": {"type": "string"}},
        # glaive row 655: `required` written as an object inside a property
        {"type": "object", "properties": {"d": {"type": "object", "required": {"circle": ["radius"]}}}},
    ],
    ids=["bad-type", "not-object", "required-object"],
)
def test_check_invalid_tool_schema(parameters: dict) -> None:
    bad = {"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": parameters}}
    row = {
        "messages": [{"role": "system", "content": "", "tools": [bad]}, msg("user", "hi"), msg("assistant", "hello")]
    }
    result = assert_fires(row, "invalid-tool-schema", "messages[0].tools[0].function.parameters")
    assert "'get_weather'" in result.issues[0].message
    assert_clean(with_messages(row, m0={"role": "system", "content": "", "tools": [tool()]}))


@pytest.mark.parametrize("token", checks.SPECIAL_TOKENS)
def test_check_special_token(token: str) -> None:
    # in content, any role
    assert_fires(chat_row(f"say {token} now", "no"), "special-token", "messages[0].content")
    assert_fires(chat_row("hi", f"ok{token}"), "special-token", "messages[1].content")
    # in a tool's description (it is rendered into the system prompt)
    described = tool(description=f"weather {token}")
    result = assert_fires(tool_row(described), "special-token", "messages[0].tools[0].function")
    assert token in result.issues[0].message
    # in metadata (the tool name line of a native call)
    name = f"get{token}weather"
    result = convert(with_messages(tool_row(tool(name)), m2=call(name)))
    assert ("special-token", "messages[2].metadata") in found(result) and result.rejected
    assert_clean(tool_row())
    assert_clean(chat_row("say <|usr|> and [MAS K] and <sop >", "fine"))  # near misses are text


def test_check_call_roundtrip() -> None:
    """GLM-4 inference reads the first line as the tool name and the rest as JSON arguments."""
    for name in (" get_weather", "get_weather ", "get\nweather"):
        row = with_messages(tool_row(tool(name)), m2=call(name))
        assert_fires(row, "call-roundtrip", "messages[2].metadata")
    assert_clean(tool_row())


# ---------------------------------------------------------------------------------------- warnings


def _schema_tool() -> dict:
    return tool(properties={"location": {"type": "string"}, "days": {"type": "integer"}}, required=["location"])


def test_check_missing_argument() -> None:
    result = assert_fires(
        with_messages(tool_row(_schema_tool()), m2=call(arguments={"days": 3})), "missing-argument", "messages[2]"
    )
    assert "'location'" in result.issues[0].message
    assert_clean(with_messages(tool_row(_schema_tool()), m2=call(arguments={"location": "Beijing"})))


def test_check_unknown_argument() -> None:
    row = with_messages(tool_row(_schema_tool()), m2=call(arguments={"location": "Beijing", "hours": 3}))
    assert "'hours'" in assert_fires(row, "unknown-argument", "messages[2]").issues[0].message
    assert_clean(with_messages(tool_row(_schema_tool()), m2=call(arguments={"location": "Beijing", "days": 3})))


@pytest.mark.parametrize("value", ["3", 2.5, None, [3]], ids=repr)
def test_check_argument_type(value) -> None:
    row = with_messages(tool_row(_schema_tool()), m2=call(arguments={"location": "Beijing", "days": value}))
    assert_fires(row, "argument-type", "messages[2].days")
    enum = tool(properties={"unit": {"type": "string", "enum": ["C", "F"]}}, required=[])
    assert_fires(with_messages(tool_row(enum), m2=call(arguments={"unit": "K"})), "argument-type", "messages[2].unit")
    assert_clean(with_messages(tool_row(enum), m2=call(arguments={"unit": "C"})))


def _with_parameters(parameters: dict, arguments: dict) -> dict:
    declared = {"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": parameters}}
    return with_messages(tool_row(declared), m2=call(arguments=arguments))


def test_argument_types_follow_refs_into_defs() -> None:
    """Generated tool schemas (pydantic, OpenAI SDKs) put enums in $defs and point at them."""
    parameters = {
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {"unit": {"$ref": "#/$defs/Unit"}},
        "required": ["unit"],
    }
    assert_fires(_with_parameters(parameters, {"unit": "K"}), "argument-type", "messages[2].unit")
    assert_clean(_with_parameters(parameters, {"unit": "C"}))


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {}, "required": 5},
        {"type": "object", "properties": {"unit": {"type": "string"}}, "required": [["unit"]]},
        {"type": "object", "$id": 5, "properties": {"unit": {"type": "string"}}},
        {"type": "object", "properties": {"unit": {"type": "string", "pattern": "("}}},
    ],
    ids=["required-int", "required-nested-list", "id-int", "bad-regex"],
)
def test_broken_tool_schemas_are_reported_not_crashed_on(parameters: dict) -> None:
    result = convert(_with_parameters(parameters, {"unit": "C"}))
    assert result.rejected and "invalid-tool-schema" in codes(result)


def test_unresolvable_refs_are_not_guessed() -> None:
    for ref in ("#/$defs/Nowhere", "https://example.com/unit.json"):
        assert_clean(_with_parameters({"type": "object", "properties": {"unit": {"$ref": ref}}}, {"unit": "C"}))


def test_check_call_without_observation() -> None:
    row = with_messages(tool_row(), m3=msg("user", "never mind"))
    assert_fires(row, "call-without-observation", "messages[2]")
    ends_with_call = {"messages": tool_row()["messages"][:3]}
    assert_fires(ends_with_call, "call-without-observation", "messages[2]")
    assert_clean(tool_row())


def test_check_not_ending_assistant() -> None:
    assert_fires(chat_row("hi", "hello", "bye"), "not-ending-assistant", "messages[2]")
    assert_fires({"messages": tool_row()["messages"][:4]}, "not-ending-assistant", "messages[3]")
    assert_clean(chat_row("hi", "hello"))


def test_check_system_position() -> None:
    late = {"messages": [msg("user", "hi"), msg("system", "be brief"), msg("assistant", "hello")]}
    assert_fires(late, "system-position", "messages[1]")
    two = {"messages": [msg("system", "a"), msg("system", "b"), msg("user", "hi"), msg("assistant", "hello")]}
    assert_fires(two, "system-position", "messages[1]")
    assert_clean({"messages": [msg("system", "a"), msg("user", "hi"), msg("assistant", "hello")]})


@pytest.mark.parametrize("text", ["I am {{name}}.", "made by {{ author }}", "{{model.name}} here"])
def test_check_placeholder(text: str) -> None:
    assert_fires(chat_row("who are you?", text), "placeholder", "messages[1].content")
    assert_clean(chat_row("who are you?", 'I am GLM. {"a": {"b": 1}} {name} {{}} {{ 1 }}'))


def test_check_duplicate() -> None:
    a, b = chat_row("hi", "hello"), chat_row("bye", "goodbye")
    results = list(convert_rows([a, b, a, a]))
    assert [r.duplicate_of for r in results] == [None, None, 0, 0]
    assert [codes(r) for r in results] == [[], [], ["duplicate"], ["duplicate"]]
    assert [r.ok for r in results] == [True] * 4  # a warning: kept unless --dedupe
    assert CODES["duplicate"][0] == "warning"
    # duplicates are found on the converted rows: the same chat in two formats is one row twice
    glaive = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert [r.duplicate_of for r in convert_rows([a, glaive])] == [None, 0]
    assert [codes(r) for r in convert_rows([a, b])] == [[], []]


def test_dedupe_drops_duplicates_and_counts_them() -> None:
    a, b = chat_row("hi", "hello"), chat_row("bye", "goodbye")
    report = Report()
    kept = []
    for result in convert_rows([a, b, a, b, a], Options(dedupe=True)):
        report.add(result)
        if result.ok:
            kept.append(result.row)
    assert kept == [a, b]
    assert (report.rows_in, report.rows_out, report.rejected, report.deduplicated) == (5, 2, 0, 3)
    assert report.codes["duplicate"] == 3 and report.examples["duplicate"] == [2, 3, 4]
    assert report.balanced


def test_check_oversized_content() -> None:
    big = "字" * (checks.OVERSIZED_CHARS + 1)
    assert_fires(chat_row(big, "ok"), "oversized-content", "messages[0].content")
    assert_clean(chat_row("字" * checks.OVERSIZED_CHARS, "ok"))


def test_check_whitespace_content() -> None:
    """Row 150 of glaive_toolcall_zh_1k: a table padded with 62,853 spaces."""
    padded = "| a |" + " " * 1000 + "| b |"
    result = assert_fires(chat_row(padded, "ok"), "whitespace-content", "messages[0].content")
    # the padding and the 4 spaces in "| a |", "| b |"
    assert "1,004 of 1,010 characters are whitespace" in result.issues[0].message
    assert_clean(chat_row("word " * 300, "ok"))  # ordinary text: 20% spaces
    assert_clean(chat_row("x" + " " * 900, "ok"))  # short padding is not worth a warning


WARNING_ROWS = {
    "missing-argument": with_messages(tool_row(_schema_tool()), m2=call(arguments={"days": 3})),
    "unknown-argument": with_messages(tool_row(), m2=call(arguments={"location": "Beijing", "x": 1})),
    "argument-type": with_messages(tool_row(), m2=call(arguments={"location": 3})),
    "call-without-observation": {"messages": tool_row()["messages"][:3]},
    "not-ending-assistant": chat_row("hi", "hello", "bye"),
    "system-position": {"messages": [msg("user", "hi"), msg("system", "s"), msg("assistant", "hello")]},
    "placeholder": chat_row("who?", "{{name}}"),
    "oversized-content": chat_row("x" * (checks.OVERSIZED_CHARS + 1), "ok"),
    "whitespace-content": chat_row("x" + " " * 2000, "ok"),
}


@pytest.mark.parametrize("code", sorted(WARNING_ROWS))
def test_strict_turns_warnings_into_rejections(code: str) -> None:
    row = WARNING_ROWS[code]
    assert CODES[code][0] == "warning"
    lenient = convert(row)
    assert code in codes(lenient) and lenient.ok
    strict = convert(row, strict=True)
    assert code in codes(strict) and strict.rejected and not strict.ok
    assert strict.reject_record()["errors"][0]["code"] == code  # the warning is the reason given
    assert convert(chat_row("hi", "hello"), strict=True).ok


def test_strict_rejects_duplicates() -> None:
    a = chat_row("hi", "hello")
    assert [r.rejected for r in convert_rows([a, a], Options(strict=True))] == [False, True]


def test_clean_samples_have_no_findings() -> None:
    for name in (
        "advertisegen_messages_sample.jsonl",
        "alpaca_en_sample.json",
        "alpaca_zh_sample.json",
        "openai_toolcall_sample.jsonl",
    ):
        assert [r.issues for r in convert_file(DATA / name) if r.issues] == [], name


# ---------------------------------------------------------------------------------------- real data (FIELD_NOTES §5)


@pytest.fixture(scope="module")
def glaive_1k() -> list[Result]:
    return list(convert_file(shared_file("glaive_toolcall_zh_1k.json")))


def _rows_with(results: list[Result], code: str) -> list[int]:
    return [r.index for r in results if code in codes(r)]


def test_glaive_1k_account(glaive_1k: list[Result]) -> None:
    report = Report()
    for result in glaive_1k:
        report.add(result)
    assert report.rows_in == 1000 and report.balanced
    assert [r.index for r in glaive_1k if r.rejected] == [64, 146, 316, 624, 655, 728, 783, 874]
    assert report.repairs["empty-tools"] == 344  # tools == "[]"
    assert report.repairs["function-call"] == 512  # rows with calls
    assert sum(repair == "function-call" for r in glaive_1k for repair, _ in r.repairs) == 696  # calls
    assert report.formats == {"sharegpt": 1000}


def test_glaive_1k_prose_calls_are_rejected(glaive_1k: list[Result]) -> None:
    assert _rows_with(glaive_1k, "observation-without-call") == [64, 783, 874]
    for index in (64, 783, 874):
        result = glaive_1k[index]
        assert result.rejected and result.errors[0].code == "observation-without-call"
        assert result.reject_record()["raw"] == result.raw.decode("utf-8")


def test_glaive_1k_tools_declared_twice(glaive_1k: list[Result]) -> None:
    """Four rows declare one tool name twice, differently; three of them call it with the
    arguments of the first declaration (the last one, checked alone, finds them missing/unknown)."""
    assert _rows_with(glaive_1k, "duplicate-tool-name") == [146, 316, 624, 728]
    for index in (146, 316, 624, 728):
        assert [(i.code, i.path) for i in glaive_1k[index].issues] == [("duplicate-tool-name", "messages[0].tools[1]")]
    assert (
        "'calculate_area' is declared again, differing in description, parameters" in glaive_1k[146].issues[0].message
    )


def test_glaive_1k_duplicates_of_row_121(glaive_1k: list[Result]) -> None:
    assert _rows_with(glaive_1k, "duplicate") == [143, 462, 930]
    assert [glaive_1k[i].duplicate_of for i in (143, 462, 930)] == [121, 121, 121]
    assert glaive_1k[121].duplicate_of is None


def test_glaive_1k_arguments_against_the_schema(glaive_1k: list[Result]) -> None:
    missing = {(r.index, i.path) for r in glaive_1k for i in r.issues if i.code == "missing-argument"}
    assert len(missing) == 2  # calls (in rows 146, 624, 728: see test_glaive_1k_tools_declared_twice)
    assert sorted({index for index, _ in missing}) == [812, 865]
    assert _rows_with(glaive_1k, "unknown-argument") == []
    assert _rows_with(glaive_1k, "undeclared-tool") == []
    assert _rows_with(glaive_1k, "arguments-not-object") == []


def test_glaive_1k_padded_row_150(glaive_1k: list[Result]) -> None:
    result = glaive_1k[150]
    assert result.ok
    assert found(result) == [
        ("oversized-content", "messages[0].content"),
        ("whitespace-content", "messages[0].content"),
    ]
    assert "of 62,926 characters" in result.issues[1].message
    assert _rows_with(glaive_1k, "whitespace-content") == [150]


def test_glaive_1k_dedupe() -> None:
    path = shared_file("glaive_toolcall_zh_1k.json")
    deduped = Report()
    for result in convert_file(path, Options(dedupe=True)):
        deduped.add(result)
    assert (deduped.rows_out, deduped.rejected, deduped.deduplicated) == (989, 8, 3)


@pytest.mark.parametrize(
    ("name", "code", "count"),
    [
        ("llamafactory/glaive_toolcall_zh_demo.json", "duplicate", 43),
        ("llamafactory/glaive_toolcall_zh_demo.json", "observation-without-call", 2),
        ("llamafactory/alpaca_zh_demo.json", "duplicate", 8),
        ("llamafactory/alpaca_en_demo.json", "duplicate", 14),
        ("llamafactory/identity.json", "placeholder", 85),
    ],
)
def test_llamafactory_demo_defects(name: str, code: str, count: int) -> None:
    results = list(convert_file(shared_file(name)))
    assert len(_rows_with(results, code)) == count
    report = Report()
    for result in results:
        report.add(result)
    assert report.balanced
    if code == "observation-without-call":
        assert report.rejected == count


# ---------------------------------------------------------------- tool schemas in rows (toolschema has the rest)


def _described(description: str, properties: dict) -> dict:
    declared = tool(properties=properties, required=[], description=description)
    declared["function"]["parameters"]["description"] = description
    return declared


def test_a_finding_quotes_the_rows_own_schema() -> None:
    """Tools that differ only in descriptions share what their schema says; a finding still
    quotes the row's own property schema, with its own description."""
    first = with_messages(
        tool_row(_described("first", {"days": {"type": "integer", "description": "OTHER"}})),
        m2=call(arguments={"days": 3}),
    )
    assert_clean(first)
    second = with_messages(
        tool_row(_described("second", {"days": {"type": "integer", "description": "how many days"}})),
        m2=call(arguments={"days": "3"}),
    )
    result = assert_fires(second, "argument-type", "messages[2].days")
    assert result.issues[0].message == 'days="3" does not match {"type": "integer", "description": "how many days"}'


def test_a_description_that_is_a_property_is_not_taken_for_one() -> None:
    """``properties: {"description": ...}`` names a parameter: its schema counts, whatever the text."""
    named = tool_row(tool(properties={"description": {"type": "string"}}))
    assert_clean(with_messages(named, m2=call(arguments={"description": "x"})))
    broken = tool_row(tool(properties={"description": "a string"}, required=[]))
    assert "invalid-tool-schema" in codes(convert(broken))
    wrong = with_messages(named, m2=call(arguments={"description": 3}))
    assert_fires(wrong, "argument-type", "messages[2].description")


def test_findings_come_out_message_by_message() -> None:
    """Within a message, in the order of the checks; messages in order; the row's last."""
    messages = [
        msg("user", "hi [gMASK] {{name}}"),
        msg("system", ""),
        call("get_time", {"x": 1}),
        msg("user", "x" * (checks.OVERSIZED_CHARS + 1)),
    ]
    found_ = [(i.code, i.path) for i in checks.check_row({"messages": messages})]
    assert found_ == [
        ("special-token", "messages[0].content"),
        ("placeholder", "messages[0].content"),
        ("system-position", "messages[1]"),
        ("empty-content", "messages[1].content"),
        ("undeclared-tool", "messages[2]"),
        ("call-without-observation", "messages[2]"),
        ("oversized-content", "messages[3].content"),
        ("not-ending-assistant", "messages[3]"),
    ]


def test_parsed_arguments_are_taken_as_given() -> None:
    """The builder has a native call's arguments parsed: check_row takes them, and parses the
    content of a call it is not given (or one whose text holds NaN, which is not JSON)."""
    row = with_messages(tool_row(_schema_tool()), m2=call(arguments={"location": "Beijing"}))
    assert checks.check_row(row) == []
    assert [i.code for i in checks.check_row(row, {2: {"days": 3}})] == ["missing-argument"]
    nan = with_messages(tool_row(_schema_tool()), m2=call(arguments='{"location": NaN}'))
    for given in (None, {2: {"location": float("nan")}}):
        [issue] = checks.check_row(nan, given)
        assert (issue.code, issue.path, issue.message) == (
            "arguments-not-object", "messages[2].content", "call arguments are not JSON (NaN is not a JSON value)"
        )  # fmt: skip
    assert checks.check_row(with_messages(tool_row(), m2=call(arguments={"location": "NaN, Infinity"}))) == []


# ---------------------------------------------------------------------------------------- reasoning


def test_check_misplaced_reasoning() -> None:
    for row, path in (
        ({"messages": [msg("user", "?", reasoning="hm"), msg("assistant", "ok")]}, "messages[0].reasoning"),
        ({"messages": [msg("system", "s", reasoning_content="hm"), msg("user", "?"), msg("assistant", "ok")]},
         "messages[0].reasoning_content"),
        ({"messages": [{"role": "user", "content": [{"type": "reasoning", "value": "hm"}]}, msg("assistant", "ok")]},
         "messages[0].content[0]"),
    ):  # fmt: skip
        result = convert(row)
        assert result.rejected and [(i.code, i.path) for i in result.issues] == [("misplaced-reasoning", path)]
    assert convert({"messages": [msg("user", "?"), msg("assistant", "ok", reasoning="hm")]}).ok


def test_check_bad_reasoning() -> None:
    for text in ("a </think> b", "a <think> b"):
        result = convert({"messages": [msg("user", "?"), msg("assistant", "ok", reasoning=text)]})
        assert result.rejected and [(i.code, i.path) for i in result.issues] == [
            ("bad-reasoning", "messages[1].reasoning")
        ]
        assert "would end (or nest) the <think> block" in result.issues[0].message
    unclosed = convert({"messages": [msg("user", "?"), msg("assistant", "<think>cut off")]})
    assert [(i.code, i.path) for i in unclosed.issues] == [("bad-reasoning", "messages[1].content")]
    assert convert({"messages": [msg("user", "?"), msg("assistant", "ok", reasoning="fine")]}).ok


def test_check_reasoning_without_slot() -> None:
    row = {"messages": [msg("user", "?"), msg("assistant", "ok", reasoning="R")]}
    for family in ("glm-4-9b-chat", "glm-4-9b-chat-v2", "glm-4-0414"):
        result = convert(row, template=family, reasoning="reject")
        assert result.rejected and [(i.code, i.path) for i in result.issues] == [
            ("reasoning-without-slot", "messages[1].reasoning")
        ]
        assert family in result.issues[0].message
    assert convert(row, template="glm-4.5", reasoning="reject").ok  # a slot: nothing to reject
    assert convert(chat_row(), template="glm-4-9b-chat", reasoning="reject").ok
