"""Broken and hostile inputs, each with the exact behaviour ``glmdata`` promises (tests/README.md
lists them): a clean one-line message that names the file and the line / row, the right exit code
(0 ok, 1 rows rejected or no rows, 2 usage or I/O error), rejected rows kept verbatim, never a
partial output file, never a traceback.

Most cases run in-process through typer's CliRunner; the ones about the process itself (memory,
broken pipes, the real console script) run ``glmdata`` as a subprocess.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chat_row, read_jsonl, tool, tool_row

import glmdata.io as gio
from glmdata.cli import app

SCRIPT = Path(sys.executable).with_name("glmdata")
GOOD = chat_row("hello", "hi, how can I help?")
GOOD_LINE = json.dumps(GOOD, ensure_ascii=False)
GOOD_OUT = json.dumps(GOOD, ensure_ascii=False, separators=(",", ":")) + "\n"
BYE = chat_row("bye", "hi, how can I help?")
BYE_LINE = json.dumps(BYE, ensure_ascii=False)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)


def run(*args, code: int, stdin: bytes | None = None):
    """``glmdata ARGS`` in-process: no traceback, no stray exception, the exit code expected."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [str(a) for a in args], input=stdin)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def files(directory: Path = Path(".")) -> set[str]:
    return {p.name for p in directory.iterdir()}


def findings(stderr: str) -> list[str]:
    """The per-row lines of a run's stderr (``FILE:LINE row N PATH: message (code; fix: ...)``)."""
    return [line for line in stderr.splitlines() if " row " in line and "(" in line and "; fix:" in line]


def error_line(result) -> str:
    """A usage / I/O error: exactly one line on stderr, starting with ``error:``."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def rejects(path: str = "out.rejects.jsonl") -> list[dict]:
    return read_jsonl(Path(path))


def write(name: str, data: bytes | str) -> Path:
    path = Path(name)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------------------- truncated arrays


def test_json_array_cut_inside_a_row() -> None:
    cut = '{"messages": [{"role": "user", "cont'
    write("in.json", f"[\n{GOOD_LINE},\n{GOOD_LINE.replace('hello', 'hey')},\n{cut}")
    result = run("convert", "in.json", "-o", "out.jsonl", code=1)
    assert len(read_jsonl(Path("out.jsonl"))) == 2
    [record] = rejects()
    assert (record["index"], record["line"], record["errors"][0]["code"]) == (2, 4, "truncated-input")
    assert record["raw"] == cut  # the partial row, verbatim
    assert findings(result.stderr) == [
        "in.json:4 row 2 file: row 2 (line 4) is cut short: the file ends inside it "
        "(truncated-input; fix: the file ends in the middle of a value: re-export or re-download it)"
    ]


def test_json_array_without_its_closing_bracket() -> None:
    write("in.json", f"[{GOOD_LINE},\n{GOOD_LINE.replace('hello', 'hey')}\n")
    run("convert", "in.json", "-o", "out.jsonl", code=1)
    assert len(read_jsonl(Path("out.jsonl"))) == 2  # every complete row is kept
    [record] = rejects()
    assert record["errors"][0]["code"] == "truncated-input" and record["raw"] == ""
    assert "not closed" in record["errors"][0]["message"]


# ---------------------------------------------------------------------------------- encodings and bytes


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_invalid_utf8_rejects_that_row_only_and_keeps_its_bytes(container: str) -> None:
    bad = GOOD_LINE.replace("hello", "h\udcffllo").encode("utf-8", "surrogateescape")  # a lone 0xff byte
    rows = [GOOD_LINE.encode(), bad, GOOD_LINE.replace("hello", "bye").encode()]
    data = b"\n".join(rows) + b"\n" if container == "jsonl" else b"[" + b",\n".join(rows) + b"]"
    write(f"in.{container}", data)
    result = run("convert", f"in.{container}", "-o", "out.jsonl", code=1)
    assert len(read_jsonl(Path("out.jsonl"))) == 2
    [record] = rejects()
    assert (record["index"], record["line"], record["errors"][0]["code"]) == (1, 2, "invalid-utf8")
    assert (
        "raw" not in record and base64.b64decode(record["raw_base64"]) == bad
    )  # not UTF-8: kept as base64, byte for byte
    offset = GOOD_LINE.index("hello") + 1
    assert findings(result.stderr)[0].startswith(
        f"in.{container}:2 row 1 row: byte {offset} is not valid UTF-8 (b'\\xffllo')"
    )


@pytest.mark.parametrize(
    "data",
    [
        f"\ufeff{GOOD_LINE}\r\n{GOOD_LINE.replace('hello', 'bye')}\r\n",  # BOM + CRLF JSONL
        f"\ufeff[\r\n  {GOOD_LINE},\r\n  {GOOD_LINE.replace('hello', 'bye')}\r\n]\r\n",  # BOM + CRLF JSON array
        f"{GOOD_LINE}\r\n\r\n{GOOD_LINE.replace('hello', 'bye')}",  # CRLF, blank line, no final newline
    ],
    ids=["bom-crlf-jsonl", "bom-crlf-array", "crlf-no-final-newline"],
)
def test_bom_and_crlf_are_transparent(data: str) -> None:
    write("in.data", data)
    result = run("convert", "in.data", "-o", "out.jsonl", code=0)
    assert Path("out.jsonl").read_text(encoding="utf-8") == GOOD_OUT + GOOD_OUT.replace("hello", "bye")
    assert "out.rejects.jsonl" not in files() and "\r" not in Path("out.jsonl").read_text(encoding="utf-8")
    assert "2 rows in = 2 out + 0 rejected" in result.stderr


WIDE = {"UTF-16 LE": "utf-16-le", "UTF-16 BE": "utf-16-be", "UTF-32 LE": "utf-32-le", "UTF-32 BE": "utf-32-be"}


@pytest.mark.parametrize("encoding", WIDE)
@pytest.mark.parametrize("container", ["jsonl", "json"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_utf16_and_utf32_files_are_one_error_with_the_fix(encoding: str, container: str, packed: bool) -> None:
    """Recognised by the byte-order mark: one I/O error saying how to re-encode, not a junk row per line."""
    text = "\ufeff" + (f"{GOOD_LINE}\n" * 3 if container == "jsonl" else f"[{GOOD_LINE},\n{GOOD_LINE}]")
    data = text.encode(WIDE[encoding])
    name = f"in.{container}.gz" if packed else f"in.{container}"
    write(name, gzip.compress(data) if packed else data)
    iconv = f"iconv -f {encoding[:6]} -t UTF-8"
    fix = f"gunzip -c {name} | {iconv} > in.utf8.{container}" if packed else f"{iconv} {name} > in.utf8.{container}"
    for command in (["convert", name, "-o", "out.jsonl"], ["validate", name], ["render", name], ["stats", name]):
        assert error_line(run(*command, code=2)) == (
            f"error: {name} is {encoding} text (it starts with that byte-order mark), and glmdata reads UTF-8: "
            f"re-encode it, e.g. {fix}"
        )
    assert files() == {name}
    line = error_line(run("validate", "-", code=2, stdin=data))
    assert line.startswith(f"error: stdin is {encoding} text") and line.endswith(f"{iconv} IN > OUT")
    write(name, data.decode(encoding[:6].lower()).encode())  # what the fix does: UTF-8 without a BOM
    run("convert", name, "-o", "out.jsonl", code=0)
    assert read_jsonl(Path("out.jsonl")) == [GOOD] * (3 if container == "jsonl" else 2)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (f"[{GOOD_LINE}, {BYE_LINE},]", 1),
        (f"[\n{GOOD_LINE},\n{BYE_LINE},\n]\n", 3),
        (f"[\r\n  {GOOD_LINE},\r\n  {BYE_LINE} ,  \r\n\r\n  ]", 3),
    ],
    ids=["one-line", "comma-then-newline", "crlf-spaces"],
)
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_trailing_comma_in_a_json_array(data: str, line: int, packed: bool) -> None:
    name = "in.json.gz" if packed else "in.json"
    write(name, gzip.compress(data.encode()) if packed else data)
    result = run("convert", name, "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD, BYE]  # every complete row before it
    [record] = rejects()
    assert (record["index"], record["line"], record["raw"], record["errors"][0]["code"]) == (
        2,
        line,
        ",",
        "invalid-json",
    )
    assert findings(result.stderr) == [
        f"{name}:{line} row 2 file: trailing comma after row 1 at line {line}: JSON allows no ',' before ']'; "
        "remove it (invalid-json; fix: fix the JSON syntax on that line (a JSONL file holds one JSON object per line))"
    ]
    assert "3 rows in = 2 out + 1 rejected" in result.stderr


def test_nul_bytes() -> None:
    escaped = GOOD_LINE.replace("hello", "hel\\u0000lo")  # valid JSON: a NUL character in the text
    raw_nul = GOOD_LINE.replace("hello", "hel\x00lo")  # invalid JSON: a raw control character
    write("in.jsonl", "\n".join([GOOD_LINE, raw_nul, "\x00\x00\x00", escaped]) + "\n")
    result = run("convert", "in.jsonl", "-o", "out.jsonl", code=1)
    out = read_jsonl(Path("out.jsonl"))
    assert out == [GOOD, chat_row("hel\x00lo", "hi, how can I help?")]
    assert [(r["line"], r["errors"][0]["code"], r["raw"]) for r in rejects()] == [
        (2, "invalid-json", raw_nul),
        (3, "invalid-json", "\x00\x00\x00"),
    ]
    assert [line.split(" row:")[0] for line in findings(result.stderr)] == ["in.jsonl:2 row 1", "in.jsonl:3 row 2"]


def test_stray_byte_between_array_elements() -> None:
    write("in.json", f"[{GOOD_LINE},\n\x00{GOOD_LINE},\n{GOOD_LINE}]")
    result = run("convert", "in.json", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD]  # the rows before it
    got = rejects()
    assert got[0]["line"] == 2 and got[0]["errors"][0]["code"] == "invalid-json"
    assert got[-1]["errors"][0]["path"] == "file" and "reading stops here" in got[-1]["errors"][0]["message"]
    assert len(findings(result.stderr)) == len(got)


# ---------------------------------------------------------------------------------- nothing in the file


@pytest.mark.parametrize(
    "data",
    [b"", b" \n\t\r\n  ", b"\xef\xbb\xbf", b"[]", b"\n[ \n ]\n"],
    ids=["empty", "whitespace", "bom-only", "empty-array", "empty-array-ws"],
)
@pytest.mark.parametrize("command", ["convert", "validate"])
def test_no_rows_exits_1_and_writes_nothing(data: bytes, command: str) -> None:
    write("in.json", data)
    write("out.jsonl", "an earlier run's output\n")
    args = ["-o", "out.jsonl"] if command == "convert" else []
    result = run(command, "in.json", *args, code=1)
    assert "in.json: no rows found (the file is empty, blank, or an empty JSON array)" in result.stderr.splitlines()
    assert files() == {"in.json", "out.jsonl"} and Path("out.jsonl").read_text() == "an earlier run's output\n"


# ---------------------------------------------------------------------------------- wrong shapes


@pytest.mark.parametrize(
    "obj",
    [GOOD, {"data": [GOOD, GOOD]}, {"train": {"rows": []}}],
    ids=["one-row", "rows-under-a-key", "nested"],
)
@pytest.mark.parametrize("command", ["convert", "validate"])
def test_pretty_printed_json_object_is_a_usage_error(obj: dict, command: str) -> None:
    write("in.json", json.dumps(obj, indent=2))
    result = run(command, "in.json", *(["-o", "out.jsonl"] if command == "convert" else []), code=2)
    assert error_line(result) == (
        "error: in.json holds a JSON object written over several lines, which is neither JSONL nor a JSON array; "
        "wrap it in [ ] (a JSON array of rows), or write one object per line (jq -c . in.json > rows.jsonl)"
    )
    assert files() == {"in.json"}


def test_one_compact_object_is_a_one_row_jsonl_file() -> None:
    write("in.json", GOOD_LINE)
    run("convert", "in.json", "-o", "out.jsonl", code=0)
    assert read_jsonl(Path("out.jsonl")) == [GOOD]


def test_object_holding_the_rows_on_one_line_is_one_unknown_row() -> None:
    write("in.json", json.dumps({"data": [GOOD]}))
    result = run("convert", "in.json", "-o", "out.jsonl", code=1)
    [record] = rejects()
    assert record["errors"][0]["code"] == "unknown-format" and "keys seen (data)" in record["errors"][0]["message"]
    assert findings(result.stderr)[0].startswith(
        "in.json:1 row 0 row: cannot tell the format from the keys seen (data)"
    )


def test_a_broken_first_line_of_jsonl_is_not_mistaken_for_a_pretty_printed_object() -> None:
    write("in.jsonl", '{"messages": [\n' + GOOD_LINE + "\n")
    run("convert", "in.jsonl", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD] and [r["line"] for r in rejects()] == [1]


@pytest.mark.parametrize("container", ["json", "jsonl"])
def test_rows_of_the_wrong_type(container: str) -> None:
    values = ["1", '"a string"', f"[{GOOD_LINE}]", "null", "true", "-2.5e3", GOOD_LINE]
    write(f"in.{container}", "[" + ",\n".join(values) + "]" if container == "json" else "\n".join(values))
    result = run("convert", f"in.{container}", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD]
    got = [(r["index"], r["line"], r["errors"][0]["code"], r["errors"][0]["message"], r["raw"]) for r in rejects()]
    kinds = ["number", "string", "array", "null", "boolean", "number"]
    assert got == [
        (i, i + 1, "not-an-object", f"row is a JSON {kind}, not an object", values[i]) for i, kind in enumerate(kinds)
    ]
    assert len(findings(result.stderr)) == 6


def test_mixed_formats_in_one_file_are_detected_row_by_row() -> None:
    rows = [
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "hello"},
            ]
        },
        {"prompt": "hi", "response": "hello", "history": []},
        GOOD,
        {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
    ]
    write("in.jsonl", "\n".join(json.dumps(r) for r in rows))
    run("convert", "in.jsonl", "-o", "out.jsonl", "--report", "r.json", code=0)
    report = json.loads(Path("r.json").read_text(encoding="utf-8"))
    assert report["formats"] == {"alpaca": 1, "sharegpt": 1, "openai": 1, "chatglm3": 2, "messages": 1}
    assert len(read_jsonl(Path("out.jsonl"))) == 6


# ---------------------------------------------------------------------------------- sizes and depths


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_thousands_of_nesting_levels(container: str) -> None:
    """Too deep to parse: the row is rejected (no RecursionError, no crash); deep but parseable
    values are validated like any other (rejected where the schema wants text, kept in a tool schema)."""
    deep_schema = json.loads('{"x":' * 400 + "1" + "}" * 400)
    deep_tool = tool_row(
        tool(
            properties={"location": {"type": "string"}, "deep": {"type": "object", "properties": deep_schema}},
            required=["location"],
        )
    )
    values = [
        GOOD_LINE,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        GOOD_LINE.replace(
            '"hello"', "[" * 900 + '"hello"' + "]" * 900
        ),  # parses (under 1,024 levels), content is not text
        json.dumps(deep_tool),
        GOOD_LINE.replace("hello", "bye"),
    ]
    write(f"in.{container}", "[" + ",".join(values) + "]" if container == "json" else "\n".join(values))
    result = run("convert", f"in.{container}", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD, deep_tool, chat_row("bye", "hi, how can I help?")]
    got = [
        (r["index"], r["line"] if container == "jsonl" else 1, r["errors"][0]["code"], r["errors"][0]["message"])
        for r in rejects()
    ]
    assert [(i, line, c) for i, line, c, _ in got] == [
        (1, 1 if container == "json" else 2, "invalid-json"),
        (2, 1 if container == "json" else 3, "invalid-json"),
        (3, 1 if container == "json" else 4, "schema"),
    ]
    assert "depth limit exceeded" in got[0][3] and "depth limit exceeded" in got[1][3]
    assert len(findings(result.stderr)) == 4  # the schema row has two findings


def test_jsonl_whose_first_line_is_an_array_loses_no_row_silently() -> None:
    """The file starts with "[", so it is read as a JSON array: the data after that array is
    reported (and makes the run fail), not dropped."""
    write("in.jsonl", f"[{GOOD_LINE}]\n{GOOD_LINE}\n{GOOD_LINE}\n")
    result = run("convert", "in.jsonl", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [GOOD]
    [record] = rejects()
    assert (record["index"], record["line"], record["errors"][0]["code"]) == (1, 2, "invalid-json")
    assert record["raw"] == (GOOD_LINE + "\n" + GOOD_LINE)[:80]
    assert "the file goes on after the JSON array it starts with (line 2)" in findings(result.stderr)[0]


@pytest.mark.parametrize(
    "data",
    [f"[{GOOD_LINE}]\n[{GOOD_LINE}]", f"[]\n{GOOD_LINE}", f"[{GOOD_LINE}] trailing"],
    ids=["two-arrays", "empty-array-then-rows", "trailing-text"],
)
def test_data_after_the_closing_bracket_is_reported(data: str) -> None:
    write("in.json", data)
    run("convert", "in.json", "-o", "out.jsonl", code=1)
    assert [r["errors"][0]["code"] for r in rejects()] == ["invalid-json"]


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_huge_integers(container: str) -> None:
    exact = 123456789012345678901234567890
    weather = tool(
        properties={"location": {"type": "string"}, "n": {"type": "integer", "maximum": exact}}, required=["location"]
    )
    kept = tool_row(weather)
    absurd = json.dumps(chat_row("hi", "hello")).replace('"hi"', '"hi", "n": ' + "9" * 5000)
    values = [json.dumps(kept), absurd]
    write(f"in.{container}", "[" + ",\n".join(values) + "]" if container == "json" else "\n".join(values))
    run("convert", f"in.{container}", "-o", "out.jsonl", code=1)
    assert str(exact) in Path("out.jsonl").read_text(encoding="utf-8")  # exact, not 1.2345678901234568e+29
    assert (
        read_jsonl(Path("out.jsonl"))[0]["messages"][0]["tools"][0]["function"]["parameters"]["properties"]["n"][
            "maximum"
        ]
        == exact
    )
    [record] = rejects()
    assert (
        record["index"] == 1
        and record["errors"][0]["code"] == "invalid-json"
        and "5000 digits" in record["errors"][0]["message"]
    )


def test_huge_integers_inside_json_text_stay_exact() -> None:
    """orjson reads an integer beyond 64 bits as a float; in a tools string, a Glaive call or an
    OpenAI arguments string (JSON text inside the row) the digits were silently lost, and the
    argument checks compared the float with the declared enum."""
    from glmdata.convert import convert_row

    exact, big = 987654321098765432109876543, 123456789012345678901234
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer", "maximum": exact, "enum": [big]}},
        "required": ["id"],
    }
    tools = json.dumps([{"name": "f", "description": "d", "parameters": schema}])
    glaive = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "function_call", "value": json.dumps({"name": "f", "arguments": {"id": big}})},
            {"from": "observation", "value": "{}"},
            {"from": "gpt", "value": "ok"},
        ],
        "tools": tools,
    }
    openai = {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": json.dumps({"id": big})}}],
            },
            {"role": "tool", "content": "{}"},
            {"role": "assistant", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": json.loads(tools)[0]}],
    }
    for row in (glaive, openai):
        result = convert_row(row)
        assert result.issues == []  # the call's argument is the enum's value, not a float near it
        messages = result.row["messages"]
        assert messages[0]["tools"][0]["function"]["parameters"]["properties"]["id"]["maximum"] == exact
        assert json.loads(messages[2]["content"]) == {"id": big} and str(big) in result.encoded.decode()


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_duplicate_keys_the_last_one_wins(container: str) -> None:
    """As in Python's json, orjson, ``datasets`` and pandas: the row is read as every consumer reads it."""
    row = (
        '{"messages": [{"role": "user", "content": "first"}], '
        '"messages": [{"role": "user", "content": "a", "content": "b"}, {"role": "assistant", "content": "c"}]}'
    )
    write(f"in.{container}", f"[{row}]" if container == "json" else row)
    run("convert", f"in.{container}", "-o", "out.jsonl", code=0)
    assert read_jsonl(Path("out.jsonl")) == [chat_row("b", "c")]


def test_a_single_100_mb_line(tmp_path: Path) -> None:
    """Converted in seconds with memory a small multiple of the line (measured in a fresh process)."""
    size = 100 * 1024 * 1024
    with open("big.jsonl", "wb") as out:
        out.write(b'{"messages": [{"role": "user", "content": "')
        out.write(b"x" * size)
        out.write(b'"}, {"role": "assistant", "content": "ok"}]}\n')
    code = (
        "import resource, subprocess, sys; "
        f"done = subprocess.run([{str(SCRIPT)!r}, 'convert', 'big.jsonl', '-o', 'out.jsonl'], "
        "capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); "
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    returncode, peak_kib = map(int, done.stdout.split())
    assert returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "oversized-content" in done.stderr
    assert peak_kib < 1024 * 1024, f"peak memory {peak_kib // 1024} MiB for a 100 MiB line"
    assert Path("out.jsonl").stat().st_size == size + len(
        '{"messages":[{"role":"user","content":""},{"role":"assistant","content":"ok"}]}\n'
    )
    assert files() == {"big.jsonl", "out.jsonl"}


# ---------------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_gzip_that_ends_early(container: str) -> None:
    rows = [chat_row(f"question {i}", "answer " + "x" * 40) for i in range(400)]
    text = "".join(json.dumps(r) + "\n" for r in rows) if container == "jsonl" else json.dumps(rows, indent=1)
    packed = gzip.compress(text.encode())
    write(f"in.{container}.gz", packed[: len(packed) // 2])
    result = run("convert", f"in.{container}.gz", "-o", "out.jsonl", code=1)
    out = read_jsonl(Path("out.jsonl"))
    assert 0 < len(out) < 400 and out == [
        json.loads(json.dumps(r)) for r in rows[: len(out)]
    ]  # the rows before the cut, in order
    [record] = rejects()
    assert record["index"] == len(out) and record["errors"][0]["code"] == "truncated-input"
    assert f"in.{container}.gz" in findings(result.stderr)[0] and "cut short" in findings(result.stderr)[0]


@pytest.mark.parametrize(
    "data", [b"\x1f\x8b", gzip.compress(GOOD_LINE.encode())[:12]], ids=["magic-only", "header-only"]
)
def test_gzip_with_nothing_inside(data: bytes) -> None:
    write("in.jsonl.gz", data)
    run("convert", "in.jsonl.gz", "-o", "out.jsonl", code=1)
    assert read_jsonl(Path("out.jsonl")) == [] and [r["errors"][0]["code"] for r in rejects()] == ["truncated-input"]


def test_gz_name_on_a_plain_file_is_read_as_plain() -> None:
    write("in.jsonl.gz", GOOD_LINE + "\n")
    run("convert", "in.jsonl.gz", "-o", "out.jsonl", code=0)
    assert read_jsonl(Path("out.jsonl")) == [GOOD]


# ---------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "."], "error: . is a directory; give a data file (JSON, JSONL, .gz or Parquet)"),
        (["convert", "missing.json"], "error: missing.json: no such file"),
        (["validate", "."], "error: . is a directory; give a data file (JSON, JSONL, .gz or Parquet)"),
        (["validate", "missing.json"], "error: missing.json: no such file"),
        (["render", "missing.json"], "error: missing.json: no such file"),
        (["stats", "missing.json"], "error: missing.json: no such file"),
    ],
)
def test_directory_or_missing_file_as_input(args: list[str], message: str) -> None:
    result = run(*args, code=2)
    assert error_line(result) == message
    assert files() == set()


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "in.jsonl"],
        ["-o", "./sub/../in.jsonl"],
        ["-o", "link.jsonl"],  # a symlink to the input
        ["-o", "hard.jsonl"],  # a hard link to the input
        ["-o", "out.jsonl", "--rejects", "in.jsonl"],
        ["-o", "out.jsonl", "--report", "in.jsonl"],
    ],
    ids=["same", "same-path-spelled-differently", "symlink", "hard-link", "rejects", "report"],
)
def test_an_output_that_is_the_input_is_refused(args: list[str]) -> None:
    data = (GOOD_LINE + "\n{broken\n").encode()
    write("in.jsonl", data)
    Path("sub").mkdir()
    os.symlink("in.jsonl", "link.jsonl")
    os.link("in.jsonl", "hard.jsonl")
    result = run("convert", "in.jsonl", *args, code=2)
    assert "is the input file; write to another path (the input is never modified)" in error_line(result)
    assert Path("in.jsonl").read_bytes() == data and files() == {"in.jsonl", "sub", "link.jsonl", "hard.jsonl"}


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "x.jsonl", "--rejects", "x.jsonl"],
        ["-o", "x.jsonl", "--report", "x.jsonl"],
        ["-o", "-", "--rejects", "r.json", "--report", "r.json"],
    ],
)
def test_two_outputs_on_one_path_are_refused(args: list[str]) -> None:
    write("in.jsonl", GOOD_LINE + "\n")
    result = run("convert", "in.jsonl", *args, code=2)
    assert "is given for two outputs; give each its own path" in error_line(result)
    assert files() == {"in.jsonl"}


def test_split_outputs_on_the_input_are_refused() -> None:
    write("in.jsonl", GOOD_LINE + "\n")
    assert "is the input file" in error_line(run("split", "in.jsonl", "--train", "in.jsonl", code=2))
    assert "two outputs" in error_line(
        run("split", "in.jsonl", "--train", "a.jsonl", "--eval-output", "a.jsonl", code=2)
    )
    assert files() == {"in.jsonl"}


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("afile/out.jsonl", "error: afile/out.jsonl: afile is not a directory"),
        ("no/such/dir/out.jsonl", "error: no/such/dir/out.jsonl: directory no/such/dir does not exist"),
        ("adir", "error: adir is a directory; give the output a file name"),
    ],
)
def test_output_that_cannot_be_written(output: str, message: str) -> None:
    """Checked before anything is read: the error comes at once, not after converting the whole input."""
    write("in.jsonl", GOOD_LINE + "\n")
    write("afile", "a regular file")
    Path("adir").mkdir()
    result = run("convert", "in.jsonl", "-o", output, code=2)
    assert error_line(result) == message
    assert files() == {"in.jsonl", "afile", "adir"} and files(Path("adir")) == set()


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_output_directory_the_kernel_refuses() -> None:
    """/proc refuses new files even to root: the failure comes from the system, reported in one line."""
    write("in.jsonl", GOOD_LINE + "\n")
    result = run("convert", "in.jsonl", "-o", "/proc/glmdata-out.jsonl", code=2)
    line = error_line(result)
    assert ("/proc" in line and "no output file was written" in line) or "not writable" in line, line
    assert not os.path.exists("/proc/glmdata-out.jsonl") and files() == {"in.jsonl"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to any directory")
def test_read_only_directory() -> None:
    write("in.jsonl", GOOD_LINE + "\n")
    Path("locked").mkdir()
    Path("locked").chmod(0o555)
    try:
        result = run("convert", "in.jsonl", "-o", "locked/out.jsonl", code=2)
        assert error_line(result) == "error: locked/out.jsonl: directory locked is not writable"
    finally:
        Path("locked").chmod(0o755)


# ---------------------------------------------------------------------------------- the rejects file


def test_rejects_file_only_when_rows_are_rejected_and_a_stale_one_is_removed() -> None:
    write("in.jsonl", GOOD_LINE + "\n{broken\n")
    run("convert", "in.jsonl", "-o", "out.jsonl", code=1)
    assert [r["raw"] for r in rejects()] == ["{broken"]
    write("in.jsonl", GOOD_LINE + "\n")  # fixed: the old rejects no longer describe the output
    result = run("convert", "in.jsonl", "-o", "out.jsonl", code=0)
    assert files() == {"in.jsonl", "out.jsonl"}
    assert (
        result.stderr.splitlines()[-1]
        == "wrote 1 rows to out.jsonl (no rejected rows; removed the stale out.rejects.jsonl)"
    )


def test_a_rejects_path_given_is_always_written() -> None:
    write("in.jsonl", GOOD_LINE + "\n")
    result = run("convert", "in.jsonl", "-o", "out.jsonl", "--rejects", "bad.jsonl", code=0)
    assert Path("bad.jsonl").read_bytes() == b""
    assert result.stderr.splitlines()[-1] == "wrote 1 rows to out.jsonl, 0 rejected rows to bad.jsonl"


def test_stdout_output_writes_no_rejects_file_unless_asked() -> None:
    write("in.jsonl", GOOD_LINE + "\n{broken\n")
    result = run("convert", "in.jsonl", "-o", "-", code=1)
    assert result.stdout == GOOD_OUT and files() == {"in.jsonl"}
    assert (
        result.stderr.splitlines()[-1]
        == "wrote 1 rows to stdout; 1 rejected rows were not saved (the data went to stdout): "
        "pass --rejects FILE to keep them"
    )
    run("convert", "in.jsonl", "-o", "-", "--rejects", "bad.jsonl", code=1)
    assert [r["raw"] for r in rejects("bad.jsonl")] == ["{broken"]


# ---------------------------------------------------------------------------------- text is text


def test_markup_in_data_and_file_names_is_printed_literally() -> None:
    """rich markup in a message ([/], [bold], [gMASK]) neither crashes the CLI nor vanishes; an emoji
    code (:smile:) stays text."""
    rows = [
        chat_row("[gMASK]hi", "yo"),
        {"messages": [{"role": "[/]", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "[/bold] [red]"}, {"role": "assistant", "content": 1}]},
    ]
    name = "in[red][gMASK][bold]:smile:.jsonl"  # rich markup and an emoji code: both text
    write(name, "\n".join(json.dumps(r) for r in rows))
    result = run("convert", name, "-o", "out.jsonl", code=1)
    lines = findings(result.stderr)
    assert (
        lines[0] == f"{name}:1 row 0 messages[0].content: contains the special token [gMASK] at char 0 "
        "(special-token; fix: remove GLM-4 special tokens from the text; they would inject fake turns)"
    )
    assert lines[1].startswith(f"{name}:2 row 1 messages[0].role: unknown role '[/]'")
    assert f"{name}: 3 rows in = 0 out + 3 rejected" in result.stderr
    assert error_line(run("convert", "no[red]file.json", code=2)) == "error: no[red]file.json: no such file"


@pytest.mark.parametrize(
    "command", [["convert", "-o", "out.jsonl"], ["validate"], ["render"], ["render", "--all"], ["stats"], ["split"]]
)
def test_markup_in_a_directory_name_and_a_tool_name(command: list[str]) -> None:
    """A path such as ``d[/x]/in.jsonl`` (directories ``d[`` and ``x]``) and a tool called ``[/x]``
    are rich closing tags that close nothing: printed as text by every command."""
    named = tool("[/x]")
    row = tool_row(named)
    row["messages"][2]["metadata"] = "[/x]"
    Path("d[/x]").mkdir(parents=True)
    path = "d[/x]/in.jsonl"
    write(path, json.dumps(row) + "\n")
    result = run(command[0], path, *command[1:], code=0)
    assert "d[/x]/in" in result.stderr or command[0] == "render"
    if command == ["stats"]:
        assert "│ [/x] " in result.stderr


def test_console_script_never_shows_a_traceback_for_hostile_input(tmp_path: Path) -> None:
    """The real entry point, on a file that has a bit of everything."""
    data = (
        b"\n".join(
            [
                b"\xef\xbb\xbf" + GOOD_LINE.encode(),
                b"{broken",
                b"\xff\xfe",
                b"[1, 2]",
                b'{"role": "[/]"}',
                b"\x00",
                b"9" * 5000,
            ]
        )
        + b"\r\n"
    )
    write("in[bold].jsonl", data)
    done = subprocess.run(
        [str(SCRIPT), "convert", "in[bold].jsonl", "-o", "out.jsonl"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(findings(done.stderr)) == 6 and read_jsonl(Path("out.jsonl")) == [GOOD]
    assert [r["index"] for r in rejects()] == [1, 2, 3, 4, 5, 6]


def test_broken_pipe_stops_quietly() -> None:
    """``glmdata convert BIG -o - | head``: no error, no traceback when the reader goes away."""
    write("in.jsonl", (GOOD_LINE + "\n") * 50_000)
    proc = subprocess.Popen(
        [str(SCRIPT), "convert", "in.jsonl", "-o", "-", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.read(100)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and stderr == b"", stderr


# ---------------------------------------------------------------------------------- closed streams

STDOUT_CLOSED = "error: stdout is closed, so the output has nowhere to go; redirect it (> FILE, | less)"
STDIN_CLOSED = "error: stdin is closed; give the data as a file, or pipe it in (glmdata convert - < FILE)"


def shell(command: str) -> subprocess.CompletedProcess:
    """``glmdata COMMAND`` run by bash, whose redirections close standard streams (``>&-``, ``<&-``)
    or open them the wrong way round (``1</dev/null``: writing fails with EBADF)."""
    return subprocess.run(["bash", "-c", f'"$0" {command}', str(SCRIPT)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "command",
    [
        "convert in.jsonl -o - -q >&-",
        "convert in.jsonl -o - -q 1</dev/null",
        "convert in.jsonl -o - --rejects bad.jsonl -q >&-",
        "convert in.jsonl -o - -q -j 2 >&-",
        "convert in.jsonl -o out.jsonl --json -q >&-",
        "convert in.jsonl -o out.jsonl --rejects - -q >&-",
        "validate --json -q in.jsonl >&-",
        "validate --json -q in.jsonl 1</dev/null",
        "render in.jsonl --row 0 >&-",
        "render in.jsonl --row 0 --raw >&-",
        "render in.jsonl --all >&-",
        "stats --json in.jsonl >&-",
        "stats --json in.jsonl 1</dev/null",
        "convert --help >&-",
    ],
)
def test_a_closed_stdout_is_one_error_not_lost_output(command: str) -> None:
    write("in.jsonl", (GOOD_LINE + "\n") * 3 + "not json\n")
    done = shell(command)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.splitlines()[-1] == STDOUT_CLOSED and done.stderr.count("error:") == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert files() == {"in.jsonl"}  # and no rejects file either: nothing was converted


@pytest.mark.parametrize(
    "command",
    [
        "convert - -o out.jsonl <&-",
        "convert - -o out.jsonl 0>/dev/null",
        "convert - -o out.jsonl -j 2 <&-",
        "validate - <&-",
        "render - <&-",
        "stats - <&-",
    ],
)
def test_a_closed_stdin_is_one_error(command: str) -> None:
    done = shell(command)
    assert (done.returncode, done.stderr) == (2, STDIN_CLOSED + "\n")
    assert files() == set()


def test_closed_streams_a_command_does_not_use_do_not_matter() -> None:
    write("in.jsonl", (GOOD_LINE + "\n") * 3)
    done = shell("convert in.jsonl -o out.jsonl -q >&- <&-")
    assert (done.returncode, done.stderr) == (0, "") and Path("out.jsonl").read_text(encoding="utf-8") == GOOD_OUT * 3
    done = shell("stats in.jsonl >&- <&-")
    assert done.returncode == 0 and "3 rows" in done.stderr, done.stderr


# ---------------------------------------------------------------------------------- reader bugs


@pytest.mark.parametrize("leading", [10, 100, 9_000, 2 * gio.CHUNK], ids=["10B", "100B", "9KB", "2MiB"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_json_array_after_a_lot_of_leading_whitespace(leading: int, packed: bool) -> None:
    data = (" " * (leading - 1) + "\n" + f"[{GOOD_LINE},\n{GOOD_LINE.replace('hello', 'bye')}]").encode()
    write("in.json", gzip.compress(data) if packed else data)
    run("convert", "in.json", "-o", "out.jsonl", code=0)
    assert read_jsonl(Path("out.jsonl")) == [GOOD, chat_row("bye", "hi, how can I help?")]
    got = list(gio.read_records("in.json"))
    assert [r.line for r in got] == [2, 3]


def test_a_circular_structure_given_to_convert_row_is_reported_not_raised() -> None:
    """No file can hold one, but a Python caller can build one; it is a row nested too deeply."""
    from glmdata.convert import convert_row

    arguments: dict = {"a": 1}
    arguments["self"] = arguments
    call = {"type": "function", "function": {"name": "f", "arguments": arguments}}
    row = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "{}"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    result = convert_row(row)
    assert result.rejected and [i.code for i in result.issues] == ["schema"]
