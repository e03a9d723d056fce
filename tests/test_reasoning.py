"""Reasoning in the input (LLaMA-Factory's multi-part rows, OpenAI-style ``reasoning_content`` /
``reasoning``, ``<think>`` in content) becomes the internal ``reasoning`` of assistant messages;
``convert --template`` writes each family's template input and ``--reasoning`` says what happens to
reasoning where a family has no slot for it; every family's output reads back into the same rows."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import DATA, call, codes, msg, read_jsonl, repair_names, tool

from glmdata import formats
from glmdata.cli import app
from glmdata.convert import Options, convert_file, convert_row, convert_rows
from glmdata.families import FAMILIES

DEMO = DATA / "reason_tool_use_demo_50.jsonl"


def lf(role: str, *parts: tuple[str, str], **extra: object) -> dict:
    return {"role": role, "content": [{"type": kind, "value": value} for kind, value in parts], **extra}


def lf_call(name: str = "get_weather", **arguments: object) -> tuple[str, str]:
    return "tool_call", json.dumps({"name": name, "arguments": arguments or {"location": "Beijing"}})


def lf_row(*messages: dict) -> dict:
    return {"messages": list(messages), "tools": json.dumps([tool(), tool("get_time")])}


TOOLS = {"role": "system", "content": "", "tools": [tool(), tool("get_time")]}


# ---------------------------------------------------------------------------------------- the real set


def test_reason_tool_use_demo_50_account() -> None:
    """LLaMA-Factory 0.9.5's reason_tool_use_demo_50.jsonl: 0 rows converted before (460 schema
    errors); now all 50 are kept, with the repairs its defects need and two real findings."""
    results = list(convert_file(DEMO))
    assert [r.format for r in results] == ["llamafactory"] * 50
    assert [r.index for r in results if not r.ok] == []
    repairs = Counter(name for r in results for name in dict.fromkeys(repair_names(r)))
    assert repairs == {
        "tools-json-string": 48,
        "function-call": 31,
        "python-schema-types": 29,
        "required-outside-parameters": 13,
        "null-fields": 10,
        "bare-properties": 6,
        "bundled-tool-results": 3,
        "empty-tools": 2,
        # written in glm-4-9b-chat's shape (no --template), which has no slot for reasoning
        "reasoning-as-text": 50,
    }
    findings = Counter(i.code for r in results for i in r.issues)
    assert findings == {"call-without-observation": 20, "unknown-argument": 1}
    # 11 conversations end on their calls (the call is the answer to learn); row 17 passes 'year'
    # to get_inflation_rate, which declares country, time_period and base_year
    assert {r.index for r in results if "call-without-observation" in codes(r)} == {
        7, 8, 9, 17, 18, 22, 24, 25, 37, 41, 49
    }  # fmt: skip
    (unknown,) = [(r.index, i.path) for r in results for i in r.issues if i.code == "unknown-argument"]
    assert unknown == (17, "messages[4]")
    rows = [r.row for r in results]
    reasoning = sum("reasoning" in m for row in rows for m in row["messages"])
    assert reasoning == 112  # every assistant message of the source has a reasoning part
    for row in rows:
        assert all(m["role"] == "assistant" for m in row["messages"] if "reasoning" in m)
        for function in (t["function"] for t in row["messages"][0].get("tools", ())):
            assert "required" not in function
            text = json.dumps(function["parameters"])
            assert '"dict"' not in text and '"str"' not in text and '"int"' not in text


def test_demo_row_2_parallel_calls_with_bundled_results() -> None:
    """Row 2: [reasoning, call, call], one tool message with both results, [reasoning, text]; then
    three calls and one message with their three results."""
    row = next(r for r in convert_file(DEMO) if r.index == 2).row
    shape = [(m["role"], m.get("metadata"), "reasoning" in m) for m in row["messages"]]
    assert shape == [
        ("system", None, False),
        ("user", None, False),
        ("assistant", "circle_area", True),
        ("observation", None, False),
        ("assistant", "circle_area", False),
        ("observation", None, False),
        ("assistant", None, True),
        ("user", None, False),
        *[("assistant", "circle_area", k == 0) if j == 0 else ("observation", None, False) for k in range(3) for j in (0, 1)],
        ("assistant", None, True),
    ]  # fmt: skip
    assert row["messages"][3]["content"] == "{'area': 7.0686, 'radius': 1.5, 'unit':'square meters'}"


# ---------------------------------------------------------------------------------------- LLaMA-Factory parts


def test_lf_parts_become_reasoning_text_and_calls() -> None:
    row = lf_row(
        lf("user", ("text", "Weather and time in Beijing?")),
        lf("assistant", ("reasoning", "Two tools. "), ("text", "Let me check."), lf_call(), ("reasoning", "Then time."),
           lf_call("get_time", location="Beijing")),
        lf("tool", ("text", "sunny")),
        lf("tool", ("text", "10:00")),
        lf("assistant", ("text", "Sunny, "), ("text", "10:00.")),
    )  # fmt: skip
    assert formats.detect(row) == "llamafactory"
    result = convert_row(row)
    assert result.ok and result.issues == []
    assert result.row == {
        "messages": [
            TOOLS,
            msg("user", "Weather and time in Beijing?"),
            msg("assistant", "Let me check.", reasoning="Two tools. Then time."),  # LLaMA-Factory joins them
            call(),
            msg("observation", "sunny"),
            call("get_time", {"location": "Beijing"}),
            msg("observation", "10:00"),
            msg("assistant", "Sunny, 10:00."),
        ]
    }


def test_lf_reasoning_goes_on_the_first_call_when_there_is_no_text() -> None:
    row = lf_row(lf("user", ("text", "?")), lf("assistant", ("reasoning", "R"), lf_call()), lf("tool", ("text", "x")),
                 lf("assistant", ("text", "ok")))  # fmt: skip
    messages = convert_row(row).row["messages"]
    assert messages[2] == {**call(), "reasoning": "R"}
    json_style = convert_row(row, Options(call_style="json")).row["messages"][2]
    assert json_style["reasoning"] == "R" and "metadata" not in json_style


@pytest.mark.parametrize(
    ("message", "code", "path"),
    [
        (lf("user", ("reasoning", "hm"), ("text", "?")), "misplaced-reasoning", "messages[0].content[0]"),
        (lf("tool", ("text", "x"), lf_call()), "bad-call", "messages[0].content[1]"),
        (lf("assistant", ("tool_call", "{not json")), "bad-call", "messages[0].content[0].value"),
        (lf("assistant", ("tool_call", '{"arguments": {}}')), "bad-call", "messages[0].content[0].value"),
        (lf("assistant", ("image_url", "x.png")), "schema", "messages[0].content[0].type"),
        (lf("assistant", ("text", "a"), loss_weight=0.5), "schema", "messages[0].loss_weight"),
    ],
)
def test_lf_rows_that_say_something_else_are_rejected(message: dict, code: str, path: str) -> None:
    result = convert_row(lf_row(message, lf("assistant", ("text", "ok"))))
    assert result.rejected and codes(result)[0] == code
    assert result.issues[0].path == path


def test_lf_loss_weight_and_string_arguments() -> None:
    row = lf_row(
        lf("user", ("text", "?"), loss_weight=1.0),
        lf("assistant", ("tool_call", json.dumps({"name": "get_weather", "arguments": '{"location": "Beijing"}'}))),
        lf("tool", ("text", "x")),
        lf("assistant", ("text", "ok"), loss_weight=0),
    )
    result = convert_row(row)
    assert result.ok
    assert result.row["messages"][1] == msg("user", "?", loss=True)
    assert result.row["messages"][-1] == msg("assistant", "ok", loss=False)
    assert ("arguments-json-string", "messages[1].content[0].value.arguments") in result.repairs


# ---------------------------------------------------------------------------------------- OpenAI and <think>


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_openai_reasoning_fields(key: str) -> None:
    row = {"messages": [msg("user", "2+2?"), msg("assistant", "4", **{key: "Adding."})]}
    assert convert_row(row).row == {"messages": [msg("user", "2+2?"), msg("assistant", "4", reasoning="Adding.")]}
    both = {"messages": [msg("user", "?"), msg("assistant", "4", reasoning="a", reasoning_content="b")]}
    rejected = convert_row(both)
    assert rejected.rejected and codes(rejected) == ["bad-reasoning"]
    same = convert_row({"messages": [msg("user", "?"), msg("assistant", "4", reasoning="a", reasoning_content="a")]})
    assert same.ok and same.row["messages"][1]["reasoning"] == "a"
    on_user = convert_row({"messages": [msg("user", "?", **{key: "hm"}), msg("assistant", "4")], "tools": []})
    assert on_user.rejected and [(i.code, i.path) for i in on_user.issues] == [
        ("misplaced-reasoning", f"messages[0].{key}")
    ]
    assert "only assistant messages carry reasoning" in on_user.issues[0].message
    # whitespace is no reasoning
    assert (
        "reasoning"
        not in convert_row({"messages": [msg("user", "?"), msg("assistant", "4", reasoning="\n")]}).row["messages"][1]
    )


@pytest.mark.parametrize(
    "row",
    [
        {"conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "<think>R</think>\nA"}]},
        {"messages": [msg("user", "?"), msg("assistant", "\n<think>\nR\n</think>A")]},
        {"messages": [msg("user", [{"type": "text", "text": "?"}]), msg("assistant", "<think>R</think>A")]},
        {"conversations": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "<think>R</think>A"}]},
        {"instruction": "?", "output": "<think>R</think>\n\nA"},
    ],
    ids=["sharegpt", "messages", "openai", "chatglm3", "alpaca"],
)
def test_think_tags_in_every_format(row: dict) -> None:
    result = convert_row(row)
    assert result.ok and result.row["messages"][-1] == msg("assistant", "A", reasoning="R")
    assert "think-tags" in repair_names(result)


def test_think_tag_defects() -> None:
    unclosed = convert_row({"instruction": "?", "output": "<think>and then the text ends"})
    assert unclosed.rejected and [(i.code, i.path) for i in unclosed.issues] == [("bad-reasoning", "output")]
    twice = convert_row({"messages": [msg("user", "?"), msg("assistant", "<think>a</think>b", reasoning_content="c")]})
    assert twice.rejected and codes(twice) == ["bad-reasoning"]
    nested = convert_row({"messages": [msg("user", "?"), msg("assistant", "b", reasoning="a </think> c")]})
    assert nested.rejected and [(i.code, i.path) for i in nested.issues] == [("bad-reasoning", "messages[1].reasoning")]
    token = convert_row({"messages": [msg("user", "?"), msg("assistant", "b", reasoning="a <|user|> c")]})
    assert token.rejected and [(i.code, i.path) for i in token.issues] == [("special-token", "messages[1].reasoning")]


def test_the_internal_row_with_reasoning_is_a_fixed_point() -> None:
    for result in convert_file(DEMO):
        again = convert_row(result.row)
        assert again.row == result.row and again.format == "messages"
        # the only repair is writing it in glm-4-9b-chat's shape, the same bytes as the first time
        assert {name for name, _ in again.repairs} == {"reasoning-as-text"} and again.encoded == result.encoded


# ---------------------------------------------------------------------------------------- --template


def _samples() -> list:
    return sorted(p for p in DATA.iterdir() if p.suffix in (".json", ".jsonl"))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("style", ["native", "json"])
def test_every_family_reads_back_into_the_same_rows(family: str, style: str) -> None:
    """internal -> the family's template input (convert --template) -> internal, on every shipped
    sample and the 50-row reasoning set (reasoning as text where the family has no slot)."""
    checked = 0
    for sample in _samples():
        internal = [r for r in convert_file(sample, Options(call_style=style)) if r.ok]
        shaped = [r for r in convert_file(sample, Options(call_style=style, template=family)) if r.ok]
        assert [r.index for r in shaped] == [r.index for r in internal], sample.name
        back = list(convert_rows([json.loads(r.encoded) for r in shaped], Options(call_style=style)))
        for a, b in zip(internal, back, strict=True):
            assert b.ok and b.row == a.row, (sample.name, a.index, [i.to_dict() for i in b.issues])
            checked += 1
    assert checked > 150


def test_glm45_output_shape() -> None:
    row = next(r for r in convert_file(DEMO, Options(template="glm-4.5")) if r.index == 2)
    written = json.loads(row.encoded)
    assert set(written) == {"messages", "tools"} and written["tools"][0]["type"] == "function"
    first_call = written["messages"][2]
    assert first_call["role"] == "assistant" and first_call["reasoning_content"]
    assert first_call["tool_calls"][0]["function"]["arguments"] == {"radius": 1.5}
    assert written["messages"][3]["role"] == "tool"
    assert all("metadata" not in m and "reasoning" not in m for m in written["messages"])


def test_no_template_writes_glm_4_9b_chat_rows_and_reasoning_is_not_lost() -> None:
    """Without --template the output is what glm-4-9b-chat's template reads (reasoning as text, as
    --reasoning text says), and reads back into the same internal rows."""
    results = list(convert_file(DEMO, Options()))
    written = [json.loads(r.encoded) for r in results]
    assert written == [json.loads(r.encoded) for r in convert_file(DEMO, Options(template="glm-4-9b-chat"))]
    assert not any("reasoning" in m for row in written for m in row["messages"])
    assert sum(m["content"].startswith("<think>") for row in written for m in row["messages"]) == 112
    back = list(convert_rows(written))
    assert [b.row for b in back] == [r.row for r in results]


def test_reasoning_reject_keeps_the_rows_verbatim(tmp_path, runner) -> None:
    out, rejects = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    args = ["convert", str(DEMO), "-o", str(out), "--rejects", str(rejects), "--template", "glm-4-9b-chat"]
    result = runner.invoke(app, [*args, "--reasoning", "reject", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["rows_in"] == 50 and report["rows_out"] == 0 and report["rejected"] == 50
    assert report["checks"]["reasoning-without-slot"]["count"] == 112
    source = DEMO.read_text(encoding="utf-8").splitlines()
    assert [r["raw"] for r in read_jsonl(rejects)] == source
    assert out.read_text() == ""
    # text: every row kept, each reasoning counted, none left as a key
    text = runner.invoke(app, [*args, "--json"])
    assert text.exit_code == 0
    report = json.loads(text.stdout)
    assert report["rows_out"] == 50 and report["repairs"]["reasoning-as-text"]["rows"] == 50
    written = read_jsonl(out)
    assert all("reasoning" not in m for row in written for m in row["messages"])
    assert sum(m["content"].startswith("<think>") for row in written for m in row["messages"]) == 112


def test_template_output_is_the_same_with_workers(tmp_path, runner) -> None:
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}.jsonl"
        result = runner.invoke(
            app, ["convert", str(DEMO), "-o", str(out), "--template", "glm-4.5", "-j", workers, "-q"]
        )
        assert result.exit_code == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == 50


def test_template_and_reasoning_options_are_checked(tmp_path, runner) -> None:
    out = str(tmp_path / "out.jsonl")
    bad = runner.invoke(app, ["convert", str(DEMO), "-o", out, "--template", "llama-3"])
    assert bad.exit_code == 2 and "unknown template family 'llama-3'; known: glm-4-9b-chat" in bad.stderr
    bad = runner.invoke(app, ["convert", str(DEMO), "-o", out, "--reasoning", "maybe"])
    assert bad.exit_code == 2 and "--reasoning must be one of text, drop, reject" in bad.stderr
    assert Options(template="glm-4.5.generation").template == "glm-4.5"
    help_text = runner.invoke(app, ["convert", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--template" in help_text and "--reasoning" in help_text
