"""The Python API: options, the account of every row, rejects kept verbatim, ``convert_batch`` in
``datasets``, and properties (hypothesis): convert is idempotent on its own output, every format
says the same conversation the same way, and no input, however broken, escapes the account."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from conftest import DATA, chat_row, codes, edit_at, json_paths, msg, tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmdata.convert import Options, Result, convert_batch, convert_file, convert_row, convert_rows
from glmdata.io import dump_row
from glmdata.jsontext import dumps
from glmdata.models import CONVERSATION
from glmdata.repairs import REPAIRS
from glmdata.report import Report

# GLMDATA_EXAMPLES=5000 for a long hunt; 60 keeps the suite fast
PROPERTY = settings(
    max_examples=int(os.environ.get("GLMDATA_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------------------- Options


def test_options_validation() -> None:
    assert Options() == Options(None, "native", frozenset(), False, False)
    with pytest.raises(ValueError, match="call_style must be 'native' or 'json'"):
        Options(call_style="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown repair nope; known repairs: null-fields"):
        Options(disabled_repairs=frozenset({"nope", "role-alias"}))
    with pytest.raises(ValueError, match="unknown format"):
        Options(from_format="csv")
    assert Options(from_format=" GLAIVE ").from_format == "sharegpt"
    assert Options(from_format="glm-4").from_format == "messages"
    with pytest.raises(AttributeError):
        Options().strict = True  # type: ignore[misc]  # frozen: safe to share across workers


# ---------------------------------------------------------------------------------------- rejects


def test_reject_record_keeps_the_source_text_verbatim() -> None:
    path = DATA / "glaive_toolcall_zh_sample.json"
    data = path.read_bytes()
    source_rows = json.loads(data)
    rejected = [r for r in convert_file(path) if r.rejected]
    assert [r.index for r in rejected] == [16, 19, 21, 22, 23]
    for result in rejected:
        record = result.reject_record(str(path))
        assert list(record) == ["index", "line", "source", "errors", "raw"]
        assert record["index"] == result.index and record["source"] == str(path)
        raw = record["raw"].encode("utf-8")
        assert raw == result.raw
        start = data.find(raw)
        assert start > 0 and data[:start].count(b"\n") + 1 == record["line"]  # the line the row starts on
        assert json.loads(raw) == source_rows[result.index]
        assert all(set(e) == {"code", "severity", "path", "message", "hint"} for e in record["errors"])
    first = rejected[0].reject_record()
    assert first["line"] == 474 and "source" not in first
    assert first["errors"] == [
        {
            "code": "observation-without-call",
            "severity": "error",
            "path": "messages[3]",
            "message": "observation follows assistant, not a tool call (was the call written as prose?)",
            "hint": "put the call in a function_call/tool-call turn before the observation, or drop the row",
        }
    ]


def test_reject_record_of_bytes_that_are_not_utf8(write) -> None:
    path = write("bad.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "b"}\n')
    results = list(convert_file(path))
    record = results[1].reject_record()
    assert record["index"] == 1 and record["line"] == 2
    assert "raw" not in record
    assert base64.b64decode(record["raw_base64"]) == b'{"instruction": "\xff", "output": "b"}'
    assert [e["code"] for e in record["errors"]] == ["invalid-utf8"]


def test_not_an_object() -> None:
    for value, kind in (([1, 2], "array"), ("text", "string"), (3, "number"), (None, "null"), (True, "boolean")):
        result = convert_row(value)
        assert result.rejected and codes(result) == ["not-an-object"]
        assert kind in result.issues[0].message


# ---------------------------------------------------------------------------------------- accounting


def test_every_row_is_accounted_for(write) -> None:
    rows = [
        json.dumps(chat_row("hi", "hello")),
        "{broken",
        "[1, 2]",
        json.dumps({"question": "q"}),
        json.dumps(chat_row("hi", "hello")),
        json.dumps(chat_row("hi", "")),
        json.dumps({"instruction": "a", "output": "b"}),
        "",
        json.dumps(chat_row("hi", "hello")),
    ]
    path = write("mixed.jsonl", "\n".join(rows) + "\n")
    for dedupe, expected in ((False, (8, 4, 4, 0)), (True, (8, 2, 4, 2))):
        report = Report()
        results = list(convert_file(path, Options(dedupe=dedupe)))
        for result in results:
            report.add(result)
        assert (report.rows_in, report.rows_out, report.rejected, report.deduplicated) == expected
        assert report.balanced
        assert [r.index for r in results] == list(range(8))
        assert [r.line for r in results] == [1, 2, 3, 4, 5, 6, 7, 9]
        assert [codes(r)[0] if r.issues else None for r in results][:4] == [
            None,
            "invalid-json",
            "not-an-object",
            "unknown-format",
        ]


def test_convert_rows_without_bytes() -> None:
    results = list(convert_rows([chat_row("a", "b"), {"instruction": "x", "output": "y"}]))
    assert [r.format for r in results] == ["messages", "alpaca"]
    assert [r.index for r in results] == [0, 1] and all(r.line is None for r in results)


def test_big_integers_survive_conversion(write) -> None:
    big = 123456789012345678901234567890
    declared = tool(properties={"n": {"type": "integer", "maximum": big}}, required=["n"])
    row = {
        "messages": [{"role": "system", "content": "", "tools": [declared]}, msg("user", "n?"), msg("assistant", "big")]
    }
    path = write("big.jsonl", json.dumps(row) + "\n" + json.dumps(row) + "\n")
    results = list(convert_file(path))
    assert results[0].ok and results[0].row == row
    assert codes(results[1]) == ["duplicate"]
    assert str(big).encode() in dump_row(results[0].row)


def test_half_surrogate_pairs_in_nested_json_are_rejected_not_crashed_on(write) -> None:
    """A file is valid UTF-8, but JSON text inside it (a call, a tools string) escapes half a
    surrogate pair: the row cannot be written as UTF-8, so it is rejected with the path."""
    declared = {
        "name": "get_weather",
        "description": "w",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
    row = {
        "tools": [declared],
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"location": "\\ud800"}}'},
            {"from": "observation", "value": "x"},
            {"from": "gpt", "value": "ok"},
        ],
    }
    path = write("rows.jsonl", [row, chat_row()])
    results = list(convert_file(path))
    assert results[0].rejected and codes(results[0]) == ["invalid-json"]
    assert results[0].issues[0].path == "messages[2].content" and "\\ud800" in results[0].issues[0].message
    assert results[1].ok
    # an escaped pair is a character, and fine
    row["conversations"][1]["value"] = '{"name": "get_weather", "arguments": {"location": "\\ud83d\\ude00"}}'
    assert convert_row(row).ok


# ---------------------------------------------------------------------------------------- datasets


def test_convert_batch_in_datasets_map_with_processes() -> None:
    """Arrow merges structs across rows (nulls everywhere); two processes; same rows as convert_file."""
    datasets = pytest.importorskip("datasets")
    for name in ("glaive_toolcall_zh_sample.json", "openai_toolcall_sample.jsonl", "chatglm3_toolcall_sample.json"):
        expected = list(convert_file(DATA / name))
        rows = [json.loads(r.raw) for r in expected]
        dataset = datasets.Dataset.from_list(rows)
        out = dataset.map(convert_batch, batched=True, batch_size=5, num_proc=2, fn_kwargs={"options": Options()})
        got = [json.loads(j) if ok else None for j, ok in zip(out["glm_json"], out["glm_ok"])]
        assert got == [r.row if not r.rejected else None for r in expected], name
        issues = [json.loads(text) for text in out["glm_issues"]]
        assert [[i["code"] for i in row] for row in issues] == [
            [i.code for i in r.issues if i.code != "duplicate"] for r in expected
        ]


def test_convert_batch_columns_and_options() -> None:
    batch = {"instruction": ["a", "b"], "output": ["x", ""], "input": ["", None]}
    out = convert_batch(batch, call_style="json")
    assert out["glm_ok"] == [True, False]
    assert json.loads(out["glm_json"][0]) == {"messages": [msg("user", "a"), msg("assistant", "x")]}
    assert out["glm_json"][1] == ""
    assert [i["code"] for i in json.loads(out["glm_issues"][1])] == ["empty-content"]
    assert convert_batch({}) == {"glm_json": [], "glm_ok": [], "glm_issues": []}


# ---------------------------------------------------------------------------------------- properties

TOOLS = {
    "get_weather": tool("get_weather", {"location": {"type": "string"}, "days": {"type": "integer"}}, ["location"]),
    "get_time": tool("get_time", {"city": {"type": "string"}, "utc": {"type": "boolean"}}, ["city"]),
}
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
    lambda s: s.strip() and not s.startswith("{")
)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# no null argument values: ChatGLM3's `parameters` dict loses them as Arrow nulls (see the report)
argument_values = st.recursive(
    json_leaves.filter(lambda v: v is not None), lambda inner: st.lists(inner, max_size=2), max_leaves=4
)


@st.composite
def specs(draw, with_tools: bool = True) -> dict:
    """A conversation, independent of any format: system text, tools, turns."""
    tools = draw(st.lists(st.sampled_from(sorted(TOOLS)), unique=True, max_size=2)) if with_tools else []
    turns: list[tuple] = []
    for _ in range(draw(st.integers(1, 3))):
        turns.append(("user", draw(texts)))
        if tools and draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2))):
                name = draw(st.sampled_from(tools))
                key = "location" if name == "get_weather" else "city"
                arguments = {
                    key: draw(texts),
                    **draw(st.dictionaries(st.sampled_from(["days", "utc", "extra"]), argument_values, max_size=2)),
                }
                turns.append(("call", name, arguments))
                turns.append(("observation", draw(texts)))
        turns.append(("assistant", draw(texts)))
    return {"system": draw(st.none() | texts), "tools": tools, "turns": turns}


def as_messages(spec: dict, nulls: bool = False) -> dict:
    messages = []
    if spec["system"] is not None or spec["tools"]:
        system: dict[str, Any] = {"role": "system", "content": spec["system"] or ""}
        if spec["tools"]:
            system["tools"] = [TOOLS[n] for n in spec["tools"]]
        messages.append(system)
    for turn in spec["turns"]:
        if turn[0] == "call":
            messages.append({"role": "assistant", "content": dumps(turn[2]), "metadata": turn[1]})
        else:
            messages.append({"role": turn[0], "content": turn[1]})
    if nulls:  # as datasets/Arrow writes it: every key on every message
        messages = [
            {
                "role": m["role"],
                "content": m["content"],
                "tools": m.get("tools"),
                "metadata": m.get("metadata"),
                "loss": None,
            }
            for m in messages
        ]
    return {"messages": messages}


def as_sharegpt(spec: dict, tools_as_string: bool = True) -> dict:
    names = {"user": "human", "assistant": "gpt", "observation": "observation"}
    conversations = []
    for turn in spec["turns"]:
        if turn[0] == "call":
            conversations.append(
                {
                    "from": "function_call",
                    "value": json.dumps({"name": turn[1], "arguments": turn[2]}, ensure_ascii=False),
                }
            )
        else:
            conversations.append({"from": names[turn[0]], "value": turn[1]})
    bare = [TOOLS[n]["function"] for n in spec["tools"]]
    row: dict[str, Any] = {
        "conversations": conversations,
        "tools": json.dumps(bare, ensure_ascii=False) if tools_as_string else bare,
    }
    if spec["system"] is not None:
        row["system"] = spec["system"]
    return row


def as_openai(spec: dict, parallel: bool = False) -> dict:
    messages: list[dict] = [{"role": "system", "content": spec["system"]}] if spec["system"] is not None else []
    n = 0
    pending_results: list[dict] = []
    for turn in spec["turns"]:
        if turn[0] == "call":
            n += 1
            tool_call = {
                "id": f"call_{n}",
                "type": "function",
                "function": {"name": turn[1], "arguments": json.dumps(turn[2])},
            }
            if parallel and messages and messages[-1].get("tool_calls") and pending_results:
                messages[-1]["tool_calls"].append(tool_call)  # the result goes after all the calls
            else:
                messages.extend(pending_results)
                pending_results = []
                messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
        elif turn[0] == "observation":
            result = {"role": "tool", "tool_call_id": f"call_{n}", "content": turn[1]}
            if parallel:
                pending_results.append(result)
            else:
                messages.append(result)
        else:
            messages.extend(pending_results)
            pending_results = []
            messages.append(
                {"role": turn[0], "content": [{"type": "text", "text": turn[1]}] if turn[0] == "user" else turn[1]}
            )
    messages.extend(pending_results)
    row: dict[str, Any] = {"messages": messages}
    if spec["tools"]:
        row["tools"] = [TOOLS[n] for n in spec["tools"]]
    return row


def as_chatglm3(spec: dict) -> dict:
    conversations: list[dict] = [{"role": "system", "content": spec["system"]}] if spec["system"] is not None else []
    for turn in spec["turns"]:
        if turn[0] == "call":
            conversations.append({"role": "tool", "name": turn[1], "parameters": turn[2]})
        elif turn[0] == "observation":
            conversations[-1]["observation"] = turn[1]
        else:
            conversations.append({"role": turn[0], "content": turn[1]})
    row: dict[str, Any] = {"conversations": conversations}
    if spec["tools"]:
        row["tools"] = [TOOLS[n] for n in spec["tools"]]
    return row


def as_alpaca(spec: dict) -> dict:
    texts_ = [t[1] for t in spec["turns"]]
    pairs = [texts_[i : i + 2] for i in range(0, len(texts_), 2)]
    row: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1], "history": pairs[:-1]}
    if spec["system"] is not None:
        row["system"] = spec["system"]
    return row


def renderings(spec: dict) -> dict[str, dict]:
    out = {
        "messages": as_messages(spec),
        "messages-arrow-nulls": as_messages(spec, nulls=True),
        "sharegpt": as_sharegpt(spec),
        "sharegpt-list": as_sharegpt(spec, tools_as_string=False),
        "openai": as_openai(spec),
        "openai-parallel": as_openai(spec, parallel=True),
        "chatglm3": as_chatglm3(spec),
    }
    if not spec["tools"]:
        out["alpaca"] = as_alpaca(spec)
    return out


def assert_fixed_point(result: Result, style: str) -> None:
    """A kept row is canonical: valid, and converting it again changes nothing and repairs nothing."""
    CONVERSATION.validate_python(result.row)
    again = convert_row(result.row, Options(call_style=style))
    assert again.row == result.row
    assert again.repairs == []
    assert codes(again) == [c for c in codes(result) if c != "inferred-schema"]
    assert again.ok == result.ok


@PROPERTY
@given(spec=specs(), style=st.sampled_from(["native", "json"]))
def test_every_format_of_a_conversation_converts_to_the_same_canonical_row(spec: dict, style: str) -> None:
    options = Options(call_style=style)
    results = {name: convert_row(row, options) for name, row in renderings(spec).items()}
    reference = results["messages"]
    assert reference.row is not None, [i.to_dict() for i in reference.issues]
    for name, result in results.items():
        assert result.row == reference.row, name
        assert codes(result) == codes(reference), name  # the same findings (text may hold special tokens, ...)
        if result.ok:
            assert_fixed_point(result, style)
    calls = [f"messages[{i}].content" for i, m in enumerate(as_messages(spec)["messages"]) if m.get("metadata")]
    assert reference.repairs == ([] if style == "native" else [("call-style", path) for path in calls])


@PROPERTY
@given(spec=specs(), style=st.sampled_from(["native", "json"]), data=st.data())
def test_convert_is_idempotent_on_its_own_output(spec: dict, style: str, data) -> None:
    """Also for rows with findings: whatever is kept is a fixed point of convert."""
    name, row = data.draw(st.sampled_from(sorted(renderings(spec).items())))
    row = data.draw(mutated(row, edits=1))
    result = convert_row(row, Options(call_style=style))
    if result.row is not None and result.ok:
        assert_fixed_point(result, style)


MUTATIONS = [
    "human",
    "gpt",
    " User ",
    "tool",
    "function_call",
    None,
    "",
    "[]",
    "<|user|>",
    "{{name}}",
    "{'a': True}",
    '{"name": "get_weather", "arguments": {"location": "\\ud800"}}',
    '[{"name": "get_time", "args": {"city": "x"}}]',
    123456789012345678901234567890,
]


@st.composite
def mutated(draw, row: Any, edits: int = 3) -> Any:
    """``row`` with a few nodes replaced by random JSON (or by a role alias / null), or deleted."""
    for _ in range(draw(st.integers(0, edits))):
        paths = json_paths(row)
        path = draw(st.sampled_from(paths))
        delete = bool(path) and draw(st.booleans())
        new = draw(json_values | st.sampled_from(MUTATIONS))
        row = edit_at(row, path, new, delete)
    return row


@PROPERTY
@given(data=st.data(), strict=st.booleans(), dedupe=st.booleans(), style=st.sampled_from(["native", "json"]))
def test_the_account_holds_on_random_and_mutated_input(data, strict: bool, dedupe: bool, style: str) -> None:
    rows = []
    for _ in range(data.draw(st.integers(1, 6))):
        if data.draw(st.booleans()):
            rows.append(data.draw(json_values))
        else:
            _, row = data.draw(st.sampled_from(sorted(renderings(data.draw(specs())).items())))
            rows.append(data.draw(mutated(row)))
    rows += rows[: data.draw(st.integers(0, 2))]  # some exact duplicates
    options = Options(call_style=style, strict=strict, dedupe=dedupe)
    report = Report()
    results = list(convert_rows(rows, options))  # never raises
    assert [r.index for r in results] == list(range(len(rows)))
    for result in results:
        report.add(result)
        assert result.rejected + result.deduplicated + result.ok == 1
        if result.ok:
            CONVERSATION.validate_python(result.row)
            assert not result.errors and (not strict or not result.issues)
            dump_row(result.row)  # writable
        elif result.rejected:
            assert result.issues, "a rejected row must say why"
            assert result.errors or strict
        assert set(name for name, _ in result.repairs) <= set(REPAIRS)
    assert report.balanced and report.rows_in == len(rows)


@PROPERTY
@given(lines=st.lists(st.binary(max_size=30) | json_values.map(lambda v: json.dumps(v).encode()), max_size=8))
def test_the_account_holds_on_random_bytes(tmp_path_factory, lines: list[bytes]) -> None:
    first = json.dumps({"instruction": "a", "output": "b"}).encode()  # a JSONL file, whatever follows
    data = b"\n".join([first, *(line.replace(b"\n", b" ") for line in lines)])
    path = tmp_path_factory.mktemp("random") / "random.jsonl"
    path.write_bytes(data)
    results = list(convert_file(path))
    lines_in = [(n, line.strip(b" \t\r\n")) for n, line in enumerate(data.split(b"\n"), 1) if line.strip(b" \t\r\n")]
    assert [(r.line, r.raw) for r in results] == lines_in
    report = Report()
    for result in results:
        report.add(result)
    assert report.balanced and report.rows_in == len(lines_in) and results[0].ok


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=1500))
def test_duplicates_point_at_the_first_equal_row(values):
    """Past the table's first growth (1,024 slots): each duplicate names the first row with its
    bytes, as a dict of the rows would."""
    rows = [{"instruction": str(value), "output": "x"} for value in values]
    expected: dict[int, int] = {}
    for result in convert_rows(rows):
        first = expected.setdefault(values[result.index], result.index)
        assert result.duplicate_of == (None if first == result.index else first)
