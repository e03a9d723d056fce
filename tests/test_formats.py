"""Every input format converts to the GLM-4 messages rows it should: golden files for the shipped
samples, equivalence of the derived samples with their Glaive originals, detection, and the
format-specific shapes (parallel calls, text parts, legacy calls, prompt/response, history)."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
from conftest import DATA, GOLDEN, call, codes, msg, repair_names, tool, tool_row

from glmdata import formats
from glmdata.convert import Options, convert_file, convert_row
from glmdata.io import dump_row


def _load_regen():
    spec = importlib.util.spec_from_file_location("golden_regen", GOLDEN / "regen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _load_regen()


# ---------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("name", list(regen.SAMPLES))
def test_golden_conversion(name: str) -> None:
    """convert_file output is byte for byte the reviewed golden JSONL, and the account matches."""
    rows, report = regen.produce(name)
    rows_path, report_path = regen.paths(name)
    assert rows_path.is_file(), f"run python tests/golden/regen.py to create {rows_path}"
    expected_rows = rows_path.read_bytes()
    if rows != expected_rows:  # show the first differing row, not 100 kB of bytes
        got, want = rows.splitlines(), expected_rows.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{name}: output row {first} differs from the golden file ({len(got)} rows vs {len(want)})")
    assert json.loads(report) == json.loads(report_path.read_text(encoding="utf-8"))


def test_golden_account_is_balanced() -> None:
    for name in regen.SAMPLES:
        report = json.loads(regen.paths(name)[1].read_text(encoding="utf-8"))
        rows = regen.paths(name)[0].read_bytes().count(b"\n")
        assert report["rows_in"] == report["rows_out"] + report["rejected"] + report["deduplicated"], name
        assert rows == report["rows_out"], name
        assert len(report["rejects"]) == report["rejected"], name


def _golden_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in regen.paths(name)[0].read_text(encoding="utf-8").splitlines()]


def test_golden_glaive_shapes() -> None:
    """What the golden Glaive rows were reviewed for: native calls, tools on an empty system message."""
    rows = _golden_rows("glaive")
    first = rows[0]["messages"]
    assert first[0] == {
        "role": "system",
        "content": "",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "generate_random_number",
                    "description": "在指定范围内生成一个随机数",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "min": {"type": "integer", "description": "最小值"},
                            "max": {"type": "integer", "description": "最大值"},
                        },
                        "required": ["min", "max"],
                    },
                },
            }
        ],
    }
    assert first[2] == {"role": "assistant", "content": '{"min": 1, "max": 100}', "metadata": "generate_random_number"}
    assert first[3] == {"role": "observation", "content": '{"number": 57}'}
    for row in rows:
        messages = row["messages"]
        assert all(m["role"] in ("system", "user", "assistant", "observation") for m in messages)
        assert all("tools" not in m for m in messages[1:])
        if "tools" in messages[0]:
            assert messages[0]["role"] == "system" and messages[0]["content"] == ""
    # rows with tools "[]" have no system message at all (no empty tools header)
    assert rows[7]["messages"][0]["role"] == "user"
    report = json.loads(regen.paths("glaive")[1].read_text(encoding="utf-8"))
    assert [r["index"] for r in report["rejects"]] == [16, 19, 21, 22, 23]  # source rows 64, 146, 624, 655, 783


def test_golden_glaive_json_call_style() -> None:
    native, as_json = _golden_rows("glaive"), _golden_rows("glaive.call-style-json")
    assert len(native) == len(as_json)
    call_json = as_json[0]["messages"][2]
    assert call_json == {
        "role": "assistant",
        "content": '{"name": "generate_random_number", "arguments": {"min": 1, "max": 100}}',
    }
    for a, b in zip(native, as_json):
        for m_native, m_json in zip(a["messages"], b["messages"], strict=True):
            if "metadata" in m_native:
                assert json.loads(m_json["content"]) == {
                    "name": m_native["metadata"],
                    "arguments": json.loads(m_native["content"]),
                }
                assert "metadata" not in m_json
            else:
                assert m_native == m_json


def test_golden_alpaca_user_text_is_instruction_blank_line_input() -> None:
    for sample, name in (("alpaca_en_sample.json", "alpaca_en"), ("alpaca_zh_sample.json", "alpaca_zh")):
        source = json.loads((DATA / sample).read_text(encoding="utf-8"))
        rows = _golden_rows(name)
        assert len(rows) == len(source)
        with_input = 0
        for src, row in zip(source, rows):
            user, assistant = row["messages"]
            if src["input"]:
                with_input += 1
                assert user == {"role": "user", "content": src["instruction"] + "\n\n" + src["input"]}
            else:
                assert user == {"role": "user", "content": src["instruction"]}
            assert assistant == {"role": "assistant", "content": src["output"]}
        assert with_input > 0, f"{sample} has no row with an input: the rule is not exercised"


# ---------------------------------------------------------------------------------------- derived samples


def _rows(path, **options) -> list[dict | None]:
    return [r.row if r.ok else None for r in convert_file(path, Options(**options))]


@pytest.mark.parametrize("style", ["native", "json"])
@pytest.mark.parametrize(
    "sample", ["chatglm3_toolcall_sample.json", "openai_toolcall_sample.jsonl", "messages_arrow_nulls_sample.jsonl"]
)
def test_derived_samples_equal_their_glaive_originals(sample: str, style: str) -> None:
    """data/README.md: the ChatGLM3, OpenAI and Arrow-null samples are Glaive rows 0, 1, 2, 4, 6, 3
    written another way; they must convert to exactly the same GLM-4 rows."""
    glaive = _rows(DATA / "glaive_toolcall_zh_sample.json", call_style=style)
    expected = [glaive[i] for i in (0, 1, 2, 4, 6, 3)]
    assert all(expected)
    assert _rows(DATA / sample, call_style=style) == expected


# ---------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("row", "name"),
    [
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}], "tools": "[]"},
            "sharegpt",
        ),
        ({"messages": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "chatglm3"),
        ({"prompt": "a", "response": "b"}, "chatglm3"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": []},
            "openai",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": []}]},
            "openai",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, "openai"),
        ({"messages": [{"role": "tool", "content": "a"}]}, "openai"),
        ({"messages": [{"from": "human", "value": "a"}], "tools": "[]"}, "sharegpt"),
        ({"messages": [{"role": "user", "content": "a", "metadata": {"source": "x"}}], "tools": []}, "openai"),
        (
            {"messages": [{"role": "assistant", "content": "{}", "metadata": "f"}, {"role": "tool", "content": "a"}]},
            "messages",
        ),
        ({"messages": [{"role": "user", "content": "a", "loss": False}], "tools": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "{}", "metadata": "f", "tool_calls": []}]}, None),
        # an OpenAI field first: OpenAI, whose reader refuses the GLM-4 fields (see below)
        ({"messages": [{"role": "user", "content": "a", "loss": False}], "functions": []}, "openai"),
    ],
)
def test_detect(row: dict, name: str) -> None:
    assert formats.detect(row) == name


def test_samples_are_detected_as_their_format() -> None:
    expected = {
        "glaive_toolcall_zh_sample.json": "sharegpt",
        "chatglm3_toolcall_sample.json": "chatglm3",
        "openai_toolcall_sample.jsonl": "openai",
        "messages_arrow_nulls_sample.jsonl": "messages",
        "advertisegen_messages_sample.jsonl": "messages",
        "alpaca_zh_sample.json": "alpaca",
        "alpaca_en_sample.json": "alpaca",
        "identity_sample.json": "alpaca",
        "reason_tool_use_demo_50.jsonl": "llamafactory",
    }
    assert {p.name for p in DATA.iterdir() if p.suffix in (".json", ".jsonl")} == set(expected)
    for sample, name in expected.items():
        assert {r.format for r in convert_file(DATA / sample)} == {name}, sample


def test_unknown_format_names_keys_seen_and_known_formats() -> None:
    result = convert_row({"question": "q", "answer": "a"})
    assert result.rejected and result.row is None
    assert codes(result) == ["unknown-format"]
    message = result.issues[0].message
    assert "answer, question" in message  # the keys it saw
    for name in formats.format_names():
        assert f"{name}:" in message  # every known format, with its signature
    assert formats.sharegpt.SIGNATURE in message


def _glm_row_with_tool_role(**top: object) -> dict:
    """A GLM-4 messages row (call with metadata, tools on the system message) whose observation has role tool."""
    row = tool_row()
    row["messages"][3] = msg("tool", '{"temperature": 20}')
    return {**row, **top}


@pytest.mark.parametrize("top", [{}, {"tools": [tool()]}])
def test_glm4_row_with_tool_role_is_read_as_messages(top: dict) -> None:
    row = _glm_row_with_tool_role(**top)
    if top:
        row["messages"][0] = msg("system", "")  # tools given top level instead
    result = convert_row(row)
    assert result.format == "messages" and result.ok and result.issues == []
    assert result.row == tool_row()
    assert ("role-alias", "messages[3].role") in result.repairs


def test_row_mixing_openai_and_glm4_fields_names_them() -> None:
    row = _glm_row_with_tool_role()
    row["messages"].insert(
        3, {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "get_weather"}}]}
    )
    row["messages"][5] = {**row["messages"][5], "loss": True}
    result = convert_row(row)
    assert result.rejected and codes(result) == ["unknown-format"]
    message = result.issues[0].message
    assert "openai fields (messages[3].tool_calls)" in message
    assert "messages fields (messages[2].metadata, messages[5].loss)" in message
    assert "write it in one of them" in message
    assert "messages[3].tool_calls" in [i.path for i in convert_row(row, Options(from_format="messages")).issues]
    # an OpenAI field first: read as OpenAI, whose reader refuses the GLM-4 field where it is
    row["messages"][1] = {"role": "user", "content": [{"type": "text", "text": "weather?"}]}
    result = convert_row(row)
    assert result.format == "openai" and result.rejected
    assert [(i.code, i.path) for i in result.issues] == [("unknown-format", "messages[2].metadata")]
    assert "openai fields (messages[1].content, messages[3].tool_calls)" in result.issues[0].message


def test_glm4_row_forced_as_openai_is_refused_not_stripped_of_its_calls() -> None:
    result = convert_row(tool_row(), Options(from_format="openai"))
    assert result.rejected and [(i.code, i.path) for i in result.issues] == [("unknown-format", "messages[2].metadata")]
    assert "messages fields (messages[2].metadata) in a row read as openai" in result.issues[0].message


def test_from_forces_the_format() -> None:
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "tools": []}
    assert convert_row(row).format == "openai"
    forced = convert_row(row, Options(from_format="glm4"))  # alias of messages
    assert forced.format == "messages"
    assert forced.row == {"messages": [msg("user", "a"), msg("assistant", "b")]}
    assert "empty-tools" in repair_names(forced)
    # forcing a format that does not fit rejects with a schema error naming the field
    wrong = convert_row({"instruction": "a", "output": "b"}, Options(from_format="sharegpt"))
    assert wrong.format == "sharegpt" and wrong.rejected
    assert codes(wrong) == ["schema"] and wrong.issues[0].path == "conversations"


def test_from_resolves_aliases_and_refuses_unknown_names() -> None:
    assert Options(from_format="Glaive").from_format == "sharegpt"
    assert Options(from_format="chatml").from_format == "openai"
    with pytest.raises(
        ValueError,
        match="unknown format 'yaml'; known formats: messages, openai, llamafactory, sharegpt, chatglm3, alpaca",
    ):
        Options(from_format="yaml")


# ---------------------------------------------------------------------------------------- OpenAI


def _parallel_row(result_order: tuple[str, str]) -> dict:
    def tc(call_id: str, name: str, city: str) -> dict:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"location": city})},
        }

    messages = [
        {"role": "user", "content": "Weather in Beijing and time in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [tc("call_a", "get_weather", "Beijing"), tc("call_b", "get_time", "Paris")],
        },
    ]
    messages += [{"role": "tool", "tool_call_id": f"call_{k}", "content": f"result {k}"} for k in result_order]
    messages.append({"role": "assistant", "content": "Sunny; 10:00."})
    return {"messages": messages, "tools": [tool("get_weather"), tool("get_time")]}


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_openai_parallel_calls_become_call_observation_pairs(order: tuple[str, str]) -> None:
    result = convert_row(_parallel_row(order))
    assert result.ok and result.issues == []
    calls = {"a": call("get_weather", {"location": "Beijing"}), "b": call("get_time", {"location": "Paris"})}
    expected_middle = []
    for k in order:  # each call right before its own result, in the order the results arrive
        expected_middle += [calls[k], msg("observation", f"result {k}")]
    assert result.row["messages"] == [
        {"role": "system", "content": "", "tools": [tool("get_weather"), tool("get_time")]},
        msg("user", "Weather in Beijing and time in Paris?"),
        *expected_middle,
        msg("assistant", "Sunny; 10:00."),
    ]
    assert repair_names(result) == ["function-call", "function-call"]


def test_openai_content_as_list_of_text_parts() -> None:
    row = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "hello"},
        ]
    }
    result = convert_row(row)
    assert result.format == "openai" and result.ok
    assert result.row == {"messages": [msg("system", "Be brief."), msg("user", "hi"), msg("assistant", "hello")]}
    assert result.repairs == []


def test_openai_legacy_function_call_and_functions() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{"location": "Beijing"}'},
            },
            {"role": "function", "name": "get_weather", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ],
        "functions": [tool()["function"]],
    }
    result = convert_row(row)
    assert result.format == "openai" and result.ok and result.issues == []
    assert result.row["messages"] == [
        {"role": "system", "content": "", "tools": [tool()]},
        msg("user", "weather?"),
        call(),
        msg("observation", "sunny"),
        msg("assistant", "It is sunny."),
    ]
    # functions are bare {name, ...} definitions: wrapped, and said so
    assert repair_names(result) == ["bare-tool", "function-call"]


def test_openai_null_content_of_a_call_is_not_a_repair() -> None:
    """content: null is what OpenAI writes on every tool-call message: no null-fields repair."""
    result = convert_row(_parallel_row(("a", "b")), Options(disabled_repairs=frozenset({"null-fields"})))
    assert result.ok
    assert "null-fields" not in repair_names(result)


def test_openai_call_without_result_is_kept_and_reported() -> None:
    row = _parallel_row(("a",))
    result = convert_row(row)
    assert [m.get("metadata") for m in result.row["messages"]] == [None, None, "get_weather", None, "get_time", None]
    assert codes(result) == ["call-without-observation"]
    assert result.issues[0].path == "messages[4]"


def test_openai_answered_second_call_only_leaves_the_first_without_observation() -> None:
    result = convert_row(_parallel_row(("b",)))
    assert [m.get("metadata") for m in result.row["messages"]] == [None, None, "get_time", None, "get_weather", None]
    assert [(i.code, i.path) for i in result.issues] == [("call-without-observation", "messages[4]")]


def _group(call_ids: list[str | None], results: list[tuple[str | None, str]]) -> dict:
    """A row whose assistant message calls tools t0, t1, ... with ``call_ids``, followed by
    ``results`` as ``(tool_call_id, content)`` tool messages and a final answer."""
    calls = [
        {"type": "function", "function": {"name": f"t{k}", "arguments": "{}"}, **({"id": cid} if cid else {})}
        for k, cid in enumerate(call_ids)
    ]
    tools = [tool(f"t{k}", properties={}) for k in range(len(call_ids))]
    messages = [msg("user", "go"), {"role": "assistant", "content": None, "tool_calls": calls}]
    for cid, content in results:
        messages.append({"role": "tool", "content": content, **({"tool_call_id": cid} if cid else {})})
    return {"messages": [*messages, msg("assistant", "done")], "tools": tools}


def _pairs(result) -> list[tuple[str, str]]:
    """(call name, observation) for each call that is followed by an observation, in order."""
    messages = result.row["messages"]
    return [
        (m["metadata"], n["content"])
        for m, n in itertools.pairwise(messages)
        if "metadata" in m and n["role"] == "observation"
    ]


@pytest.mark.parametrize(
    ("call_ids", "results", "pairs"),
    [
        # results in another order than the calls: each after its own call, in arrival order
        (["x", "y", "z"], [("z", "Z"), ("x", "X"), ("y", "Y")], [("t2", "Z"), ("t0", "X"), ("t1", "Y")]),
        # an id-less result, the only one, takes the one call the results with ids left (was: the first call)
        (["x", "y"], [(None, "Y"), ("x", "X")], [("t1", "Y"), ("t0", "X")]),
        # no result has an id: by position, whatever ids the calls have
        (["x", "y"], [(None, "first"), (None, "second")], [("t0", "first"), ("t1", "second")]),
        ([None, None], [(None, "first"), (None, "second")], [("t0", "first"), ("t1", "second")]),
        # two calls with the same id: one result each, in call order
        (["x", "x"], [("x", "1"), ("x", "2")], [("t0", "1"), ("t1", "2")]),
        # one call, one result with its id
        (["x"], [("x", "X")], [("t0", "X")]),
    ],
)
def test_openai_results_are_paired_by_id(call_ids: list, results: list, pairs: list) -> None:
    result = convert_row(_group(call_ids, results))
    assert result.ok and result.issues == [], [i.to_dict() for i in result.issues]
    assert _pairs(result) == pairs


@pytest.mark.parametrize(
    ("call_ids", "results", "path", "words"),
    [
        (
            ["x"],
            [("q", "Q")],
            "messages[2].tool_call_id",
            "tool_call_id 'q' names no call of messages[1] (its call ids: 'x')",
        ),
        (["x", "y"], [("y", "Y"), ("q", "Q")], "messages[3].tool_call_id", "'q' names no call of messages[1]"),
        ([None, None], [("x", "X")], "messages[2].tool_call_id", "(its call ids: none)"),
        (["x", "y"], [("x", "1"), ("x", "2")], "messages[3].tool_call_id", "'x' answers a call already answered"),
        # id-less results in a group paired by id, with no single call left for them
        (["x", "y", "z"], [("x", "X"), (None, "?")], "messages[3].tool_call_id", "2 calls are left unanswered"),
        (["x", "y", "z"], [(None, "?"), ("x", "X"), (None, "?")], "messages[2].tool_call_id", "no tool_call_id"),
        (["x"], [("x", "X"), (None, "?")], "messages[3].tool_call_id", "0 calls are left"),
    ],
)
def test_openai_unmatched_tool_result_rejects_the_row(call_ids: list, results: list, path: str, words: str) -> None:
    result = convert_row(_group(call_ids, results))
    assert result.rejected and result.row is None
    assert [(i.code, i.path) for i in result.issues] == [("unmatched-tool-result", path)]
    assert words in result.issues[0].message
    assert "give " in result.issues[0].message and "tool_call_id" in result.issues[0].hint


def test_openai_extra_result_without_ids_is_an_observation_without_call() -> None:
    result = convert_row(_group(["x"], [(None, "1"), (None, "2")]))
    assert _pairs(result) == [("t0", "1")]
    assert [(i.code, i.path) for i in result.issues] == [("observation-without-call", "messages[4]")]


def test_openai_tools_on_the_system_message_are_declared() -> None:
    """Some exports put the tools on the system message: they are the row's tools, not "declared: none"."""
    row = _parallel_row(("a", "b"))
    tools = row.pop("tools")
    row["messages"].insert(0, {"role": "system", "content": "Be brief.", "tools": tools})
    result = convert_row(row)
    assert result.format == "openai" and result.ok and result.issues == []
    assert result.row["messages"][0] == {"role": "system", "content": "Be brief.", "tools": tools}
    assert repair_names(result) == ["function-call", "function-call"]


@pytest.mark.parametrize(
    ("top", "on_system", "expected"),
    [
        ([tool("get_weather")], [tool("get_weather"), tool("get_time")], [tool("get_weather"), tool("get_time")]),
        # same name, another definition: both kept, for the checks and the template to see
        (
            [tool("get_weather"), tool("get_time")],
            [tool("get_time", description="other")],
            [tool("get_weather"), tool("get_time"), tool("get_time", description="other")],
        ),
    ],
)
def test_openai_tools_top_level_and_on_the_system_message_are_merged(
    top: list, on_system: list, expected: list
) -> None:
    row = _parallel_row(("a", "b"))
    row["tools"] = top
    row["messages"].insert(0, {"role": "system", "content": "", "tools": on_system})
    result = convert_row(row)
    assert result.format == "openai"
    assert result.row["messages"][0] == {"role": "system", "content": "", "tools": expected}
    if len(expected) == 2:  # identical definitions merged: nothing to report
        assert result.ok and result.issues == []
    assert "undeclared-tool" not in codes(result)


def test_openai_tools_on_a_user_message_move_to_the_system_message() -> None:
    row = _parallel_row(("a", "b"))
    row["messages"][0]["tools"] = row.pop("tools")
    result = convert_row(row)
    assert result.ok and result.issues == []
    assert result.row["messages"][0] == {
        "role": "system",
        "content": "",
        "tools": [tool("get_weather"), tool("get_time")],
    }
    assert ("tools-to-system", "messages[0].tools") in result.repairs


# ---------------------------------------------------------------------------------------- ChatGLM3


def test_chatglm3_prompt_response_with_history() -> None:
    row = {"prompt": "and now?", "response": "now B", "history": [["first?", "A"], ["second?", "B"]]}
    result = convert_row(row)
    assert result.format == "chatglm3" and result.ok and result.repairs == []
    assert result.row == {
        "messages": [
            msg("user", "first?"),
            msg("assistant", "A"),
            msg("user", "second?"),
            msg("assistant", "B"),
            msg("user", "and now?"),
            msg("assistant", "now B"),
        ]
    }


def test_chatglm3_plain_prompt_response() -> None:
    result = convert_row({"prompt": "hi", "response": "hello"})
    assert result.row == {"messages": [msg("user", "hi"), msg("assistant", "hello")]}


def test_chatglm3_tool_turn_and_loss_flags() -> None:
    row = {
        "tools": [tool()],
        "conversations": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "weather?", "loss": False},
            {"role": "tool", "name": "get_weather", "parameters": {"location": "Beijing"}, "observation": {"t": 20}},
            {"role": "assistant", "content": "20 degrees", "loss": True},
        ],
    }
    result = convert_row(row)
    assert result.format == "chatglm3" and result.ok and result.issues == []
    assert result.row["messages"] == [
        {"role": "system", "content": "You are helpful.", "tools": [tool()]},
        msg("user", "weather?", loss=False),
        call(),
        msg("observation", '{"t": 20}'),  # a non-string observation is written as JSON
        msg("assistant", "20 degrees", loss=True),
    ]


# ---------------------------------------------------------------------------------------- Alpaca, ShareGPT


def test_alpaca_history_pairs_and_system() -> None:
    row = {
        "instruction": "Translate",
        "input": "bonjour",
        "output": "hello",
        "system": "You translate.",
        "history": [["Who are you?", "A translator."]],
    }
    result = convert_row(row)
    assert result.format == "alpaca" and result.ok
    assert result.row == {
        "messages": [
            msg("system", "You translate."),
            msg("user", "Who are you?"),
            msg("assistant", "A translator."),
            msg("user", "Translate\n\nbonjour"),
            msg("assistant", "hello"),
        ]
    }


def test_alpaca_without_input() -> None:
    assert convert_row({"instruction": "Say hi", "output": "hi"}).row == {
        "messages": [msg("user", "Say hi"), msg("assistant", "hi")]
    }
    assert convert_row({"instruction": "Say hi", "input": "", "output": "hi"}).row["messages"][0] == msg(
        "user", "Say hi"
    )


def test_sharegpt_system_key_becomes_first_system_message_with_tools() -> None:
    row = {
        "system": "You are a weather bot.",
        "tools": json.dumps([tool()["function"]]),
        "conversations": [
            {"from": "human", "value": "weather?"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "get_weather", "arguments": {"location": "Beijing"}}),
            },
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "Sunny."},
        ],
    }
    result = convert_row(row)
    assert result.format == "sharegpt" and result.ok and result.issues == []
    assert result.row["messages"] == [
        {"role": "system", "content": "You are a weather bot.", "tools": [tool()]},
        msg("user", "weather?"),
        call(),
        msg("observation", "sunny"),
        msg("assistant", "Sunny."),
    ]


def test_sharegpt_without_tools_key_needs_no_repair() -> None:
    """A plain ShareGPT chat has no tools at all: nothing was empty, nothing is repaired."""
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    result = convert_row(row, Options(disabled_repairs=frozenset({"empty-tools"})))
    assert result.ok and result.repairs == []
    assert result.row == {"messages": [msg("user", "hi"), msg("assistant", "hello")]}


def test_messages_rows_pass_through_unchanged() -> None:
    for line in (DATA / "advertisegen_messages_sample.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        result = convert_row(row)
        assert result.ok and result.repairs == [] and result.issues == []
        assert dump_row(result.row) == dump_row(row)


# ---------------------------------------------------------------------------------------- ShareGPT fast path

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.just([]),
    st.just({}),
)
_turn = st.one_of(
    st.fixed_dictionaries(
        {
            "from": st.one_of(st.sampled_from(["human", "gpt", "function_call"]), _leaf),
            "value": st.one_of(st.text(max_size=5), _leaf),
        },
        optional={"extra": _leaf},
    ),
    _leaf,
)
_sharegpt_rows = st.fixed_dictionaries(
    {"conversations": st.one_of(st.lists(_turn, max_size=3), _leaf)},
    optional={"tools": st.one_of(_leaf, st.lists(_leaf, max_size=2)), "system": _leaf, "other": _leaf},
)


@settings(max_examples=500, deadline=None)
@given(_sharegpt_rows)
def test_sharegpt_fast_path_reads_what_pydantic_would(row: dict) -> None:
    """Where the plain check spares a row its Pydantic round, Pydantic accepts the row and its
    validated copy holds the same values under every key the converter reads."""
    from pydantic import ValidationError

    sharegpt = formats.sharegpt
    try:
        validated = sharegpt.ADAPTER.validate_python(row)
    except ValidationError:
        assert not sharegpt._plainly_valid(row)
        return
    if sharegpt._plainly_valid(row):
        assert [(t["from"], t["value"]) for t in validated["conversations"]] == [
            (t["from"], t["value"]) for t in row["conversations"]
        ]
        assert (validated.get("tools"), validated.get("system")) == (row.get("tools"), row.get("system"))
