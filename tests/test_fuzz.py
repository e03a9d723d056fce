"""Fuzzing whole files (hypothesis): rows in every supported format, mutated, written in every
container (JSONL, JSON array compact or indented, CRLF, BOM, gzip), sometimes damaged byte by
byte (cut, bytes inserted, a byte flipped). ``test_convert.py`` holds the row-level properties;
these hold for files, through the readers and the CLI:

- nothing raises: every file gives one result per row, or a one-line usage error (exit 2);
- rows in = rows out + rejected + deduplicated, and an undamaged file has as many rows in as it
  was written with;
- what the CLI writes is exactly the kept rows, and the rejects file exactly the rejected rows,
  each with its source bytes verbatim;
- convert is idempotent on its own output (same bytes, nothing repaired, nothing rejected);
- every output row passes validation and renders, with trained spans for every ``--train-on``,
  and its rendered text holds no special token but the ones the template itself writes.

Examples per test: ``GLMDATA_FUZZ_EXAMPLES`` (default 40; CI-sized runs use thousands).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import edit_at, json_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glmdata.checks import SPECIAL_TOKENS
from glmdata.convert import Options, convert_file, convert_row
from glmdata.io import InputError, dump_row
from glmdata.render import NothingToTrain, render, render_spans
from glmdata.report import Report

FUZZ = settings(
    max_examples=int(os.environ.get("GLMDATA_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
SPECIAL = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))

# ---------------------------------------------------------------------------------- rows

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=16),
    st.sampled_from(
        [
            "hi",
            "  padded  ",
            "line\nbreak",
            'quote " and \\ backslash',
            "汉字 🙂 \u2028",
            "{{name}}",
            "<|user|>",
            "[gMASK]",
            "\t",
            " ",
        ]
    ),
)
names = st.sampled_from(["get_weather", "get_time", "search", "天气"])
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def function(name: str) -> dict:
    return {
        "name": name,
        "description": f"{name} tool",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }


@st.composite
def conversations(draw) -> dict:
    """A conversation independent of format: system, tools, and turns (user / call / observation / assistant)."""
    tools = draw(st.lists(names, unique=True, max_size=2))
    turns: list[tuple] = []
    for _ in range(draw(st.integers(1, 3))):
        turns.append(("user", draw(texts)))
        if tools and draw(st.booleans()):
            turns.append(("call", draw(st.sampled_from(tools)), {"q": draw(texts)}))
            turns.append(("observation", draw(texts)))
        turns.append(("assistant", draw(texts)))
    return {"system": draw(st.none() | texts), "tools": tools, "turns": turns}


def as_messages(c: dict) -> dict:
    messages: list[dict] = []
    if c["system"] is not None or c["tools"]:
        messages.append(
            {
                "role": "system",
                "content": c["system"] or "",
                **(
                    {"tools": [{"type": "function", "function": function(n)} for n in c["tools"]]} if c["tools"] else {}
                ),
            }
        )
    for turn in c["turns"]:
        if turn[0] == "call":
            messages.append(
                {"role": "assistant", "metadata": turn[1], "content": json.dumps(turn[2], ensure_ascii=False)}
            )
        else:
            messages.append({"role": turn[0], "content": turn[1]})
    return {"messages": messages}


def as_openai(c: dict) -> dict:
    messages: list[dict] = [{"role": "system", "content": c["system"]}] if c["system"] is not None else []
    for n, turn in enumerate(c["turns"]):
        if turn[0] == "call":
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"c{n}",
                            "type": "function",
                            "function": {"name": turn[1], "arguments": json.dumps(turn[2])},
                        }
                    ],
                }
            )
        elif turn[0] == "observation":
            messages.append({"role": "tool", "tool_call_id": f"c{n - 1}", "content": turn[1]})
        else:
            messages.append(
                {"role": turn[0], "content": [{"type": "text", "text": turn[1]}] if turn[0] == "user" else turn[1]}
            )
    return {
        "messages": messages,
        **({"tools": [{"type": "function", "function": function(n)} for n in c["tools"]]} if c["tools"] else {}),
    }


def as_sharegpt(c: dict) -> dict:
    names_ = {"user": "human", "assistant": "gpt", "observation": "observation"}
    conversations_ = [
        {"from": "function_call", "value": json.dumps({"name": t[1], "arguments": t[2]}, ensure_ascii=False)}
        if t[0] == "call"
        else {"from": names_[t[0]], "value": t[1]}
        for t in c["turns"]
    ]
    row: dict[str, Any] = {
        "conversations": conversations_,
        "tools": json.dumps([function(n) for n in c["tools"]], ensure_ascii=False),
    }
    if c["system"] is not None:
        row["system"] = c["system"]
    return row


def as_chatglm3(c: dict) -> dict:
    conversations_: list[dict] = [{"role": "system", "content": c["system"]}] if c["system"] is not None else []
    for turn in c["turns"]:
        if turn[0] == "call":
            conversations_.append({"role": "tool", "name": turn[1], "parameters": turn[2]})
        elif turn[0] == "observation":
            conversations_[-1]["observation"] = turn[1]
        else:
            conversations_.append({"role": turn[0], "content": turn[1]})
    return {"conversations": conversations_, **({"tools": [function(n) for n in c["tools"]]} if c["tools"] else {})}


def as_chatglm3_prompt(c: dict) -> dict:
    pairs = [(t[1]) for t in c["turns"] if t[0] in ("user", "assistant")]
    pairs = [pairs[i : i + 2] for i in range(0, len(pairs) - 1, 2)]
    return {"prompt": pairs[-1][0], "response": pairs[-1][1], "history": pairs[:-1]}


def as_alpaca(c: dict) -> dict:
    pairs = [(t[1]) for t in c["turns"] if t[0] in ("user", "assistant")]
    pairs = [pairs[i : i + 2] for i in range(0, len(pairs) - 1, 2)]
    row: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1], "history": pairs[:-1]}
    if c["system"] is not None:
        row["system"] = c["system"]
    return row


FORMATS = [as_messages, as_openai, as_sharegpt, as_chatglm3, as_chatglm3_prompt, as_alpaca]
MUTATIONS = [
    None,
    "",
    "[]",
    "{}",
    0,
    -1,
    True,
    "human",
    " Assistant ",
    "tool",
    "function_call",
    "<|observation|>",
    "{{name}}",
    "{'q': True}",
    2**80,
    [],
    {},
    "\ud800",
]


@st.composite
def rows(draw) -> Any:
    """A row in one of the formats, maybe mutated (keys deleted, values replaced), maybe not a row at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    row = draw(st.sampled_from(FORMATS))(draw(conversations()))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(json_paths(row)))
        row = edit_at(
            row, path, draw(json_values | st.sampled_from(MUTATIONS)), delete=bool(path) and draw(st.booleans())
        )
    return row


# ---------------------------------------------------------------------------------- files


def dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)  # lone surrogates become \ud800 escapes


@st.composite
def files(draw) -> tuple[bytes, int, bool, str]:
    """``(bytes, rows written, damaged, container)``."""
    values = draw(st.lists(rows(), min_size=1, max_size=6))
    values += values[: draw(st.integers(0, 2))]  # exact duplicates
    container = draw(st.sampled_from(["jsonl", "jsonl-crlf", "array", "array-indented"]))
    if container.startswith("jsonl"):
        newline = "\r\n" if container == "jsonl-crlf" else "\n"
        text = newline.join(dumps(v) for v in values) + draw(st.sampled_from(["", newline]))
    else:
        text = dumps(values, indent=2 if container == "array-indented" else None)
    data = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none", "none", "cut", "insert", "flip"]))
    if damage != "none":
        at = draw(st.integers(0, len(data)))
        if damage == "cut":
            data = data[:at]
        elif damage == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if draw(st.integers(0, 4)) == 0:
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = data[: draw(st.integers(2, len(data)))]
            damage = "cut-gzip"
    # JSONL whose first row is an array is read as a JSON array (the file starts with "["): its
    # count differs by design (see test_hostile_inputs), like a damaged file's
    return (
        data,
        len(values),
        damage != "none" or (container.startswith("jsonl") and isinstance(values[0], list)),
        container,
    )


def check_row_is_canonical(row: dict, style: str) -> None:
    """Validates, is a fixed point of convert, and renders with sane special tokens and spans."""
    again = convert_row(row, Options(call_style=style))
    assert again.ok and again.row == row and again.repairs == [] and not again.errors, [
        i.to_dict() for i in again.issues
    ]
    messages = row["messages"]
    text = render(messages)
    structural = 2 + sum(1 for m in messages if m.get("tools") is not None) + sum(1 for m in messages if m["content"])
    assert len(SPECIAL.findall(text)) == structural, text  # no token smuggled in by the data
    for train_on in ("all", "last", "assistant"):
        try:
            rendered = render_spans(messages, train_on=train_on)
        except NothingToTrain:
            assert train_on == "assistant" and any(m.get("loss") is False for m in messages)
            continue
        assert rendered.text == text + "<|user|>" and rendered.spans
        assert all(0 <= a < b <= len(rendered.text) for a, b in rendered.spans)


@FUZZ
@given(case=files(), style=st.sampled_from(["native", "json"]), strict=st.booleans(), dedupe=st.booleans())
def test_files_in_every_container_convert_with_an_exact_account(
    tmp_path_factory, case, style: str, strict: bool, dedupe: bool
) -> None:
    data, written, damaged, _ = case
    path = tmp_path_factory.mktemp("fuzz") / "in.data"
    path.write_bytes(data)
    try:  # never raises, but for a file that a damage made start with a UTF-16/32 byte-order mark
        results = list(convert_file(path, Options(call_style=style, strict=strict, dedupe=dedupe)))
    except InputError as exc:
        assert "byte-order mark" in str(exc)
        return
    report = Report()
    for result in results:
        report.add(result)
        assert result.ok + result.rejected + result.deduplicated == 1
        if result.rejected:
            assert result.issues, "a rejected row says why"
        if result.ok:
            check_row_is_canonical(result.row, style)
    assert report.balanced
    assert [r.index for r in results] == list(range(len(results)))
    if not damaged:
        assert report.rows_in == written, [(r.index, [i.message for i in r.issues]) for r in results]


def run_cli(directory: Path, *args: str):
    from typer.testing import CliRunner

    from glmdata.cli import app

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(cwd)


@FUZZ
@given(case=files(), style=st.sampled_from(["native", "json"]))
def test_the_cli_writes_exactly_the_kept_rows_and_the_rejects_verbatim(tmp_path_factory, case, style: str) -> None:
    data, _, damaged, _ = case
    directory = tmp_path_factory.mktemp("cli")
    (directory / "in.data").write_bytes(data)
    result = run_cli(directory, "convert", "in.data", "-o", "out.jsonl", "--call-style", style, "--report", "r.json")
    assert "Traceback" not in result.output and (
        result.exception is None or isinstance(result.exception, SystemExit)
    ), result.output
    present = sorted(p.name for p in directory.iterdir())
    if result.exit_code == 2:  # only a file that is one JSON object over several lines, or UTF-16/32, is a usage error
        said = ("written over several lines", "byte-order mark")
        assert any(s in result.stderr for s in said) and present == ["in.data"], result.stderr
        return
    expected = list(convert_file(directory / "in.data", Options(call_style=style)))
    if not expected:
        assert result.exit_code == 1 and present == ["in.data", "r.json"]  # the report asked for, no empty output
        return
    assert (directory / "out.jsonl").read_bytes() == b"".join(dump_row(r.row) for r in expected if r.ok)
    rejected = [r for r in expected if r.rejected]
    assert result.exit_code == (1 if rejected else 0)
    if rejected:
        # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 or U+0085
        records = [
            json.loads(line)
            for line in (directory / "out.rejects.jsonl").read_text(encoding="utf-8").split("\n")
            if line
        ]
        assert [rec["index"] for rec in records] == [r.index for r in rejected]
        source = gzip.decompress(data) if data[:2] == b"\x1f\x8b" and not damaged else data
        for rec, r in zip(records, rejected):
            raw = rec["raw"].encode("utf-8") if "raw" in rec else base64.b64decode(rec["raw_base64"])
            assert raw == r.raw
            if data[:2] != b"\x1f\x8b":
                assert raw in source  # verbatim bytes of the input
    else:
        assert "out.rejects.jsonl" not in present
    report = json.loads((directory / "r.json").read_text(encoding="utf-8"))
    assert report["rows_in"] == report["rows_out"] + report["rejected"] + report["deduplicated"] == len(expected)

    # idempotent: the output converts to itself, with nothing repaired or rejected
    again = run_cli(
        directory, "convert", "out.jsonl", "-o", "again.jsonl", "--call-style", style, "--report", "r2.json"
    )
    assert again.exit_code == (0 if report["rows_out"] else 1), again.output
    if report["rows_out"]:
        assert (directory / "again.jsonl").read_bytes() == (directory / "out.jsonl").read_bytes()
        second = json.loads((directory / "r2.json").read_text(encoding="utf-8"))
        assert second["rejected"] == 0 and second["repairs"] == {}


@FUZZ
@given(
    data=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b"[", b"{", b"\x1f\x8b", b"\xef\xbb\xbf[", b"PAR1", b" \n\t"]),
)
def test_random_bytes_never_crash_a_reader_or_a_command(tmp_path_factory, data: bytes, prefix: bytes) -> None:
    directory = tmp_path_factory.mktemp("bytes")
    (directory / "in.data").write_bytes(prefix + data)
    try:
        results = list(convert_file(directory / "in.data"))
    except InputError:  # the API's one exception: a file that cannot be opened as data at all
        results = []
    report = Report()
    for r in results:
        report.add(r)
    assert report.balanced
    for command in (
        ["validate", "in.data"],
        ["convert", "in.data", "-o", "out.jsonl"],
        ["render", "in.data", "--all"],
        ["stats", "in.data"],
    ):
        result = run_cli(directory, *command)
        assert "Traceback" not in result.output, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (command, repr(result.exception))
        assert result.exit_code in (0, 1, 2), (command, result.exit_code)
        if result.exit_code == 2:
            assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), (
                command,
                result.stderr,
            )


@pytest.mark.parametrize(
    "seed_row",
    [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "loss": False}]},
        {
            "conversations": [
                {"role": "user", "content": "a"},
                {"role": "tool", "name": "f", "parameters": {}, "observation": None},
            ]
        },
    ],
)
def test_edge_rows_from_earlier_fuzzing(tmp_path: Path, seed_row: dict) -> None:
    """Rows hypothesis found interesting, kept as fixed cases."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(seed_row) + "\n", encoding="utf-8")
    for result in convert_file(path):
        if result.ok:
            check_row_is_canonical(result.row, "native")
