"""Readers and writers: every row comes back with its verbatim bytes and its line number, whatever
the container (JSON array streamed in chunks, JSONL, gzip, Parquet, stdin), and a broken file is
reported row by row instead of crashing or being read wrong."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import DATA

import glmdata.io as gio
from glmdata.io import InputError, atomic_writer, read_records, write_jsonl

TRICKY_ROWS = [
    {"conversations": [{"from": "human", "value": 'say "hi" \\ and ] or } or [ or {'}], "tools": "[]"},
    {"s": "ends with a backslash \\", "t": '\\"', "u": "\\\\"},
    {"nested": [[1, [2, [3]]], {"a": {"b": {"c": []}}}], "empty": {}, "list": []},
    {"unicode": "汉字 и эмодзи 🙂 \u2028", "escaped": '\u00e9\n\t"', "quote_at_end": '"'},
    {"n": 1, "f": -2.5e-3, "t": True, "z": None},
]


def records(path, **kwargs) -> list[tuple]:
    return [(r.index, r.line, r.raw, r.value, r.error) for r in read_records(path, **kwargs)]


def oracle_array(data: bytes) -> list[tuple[int, int, bytes, object]]:
    """``(index, line, raw, value)`` of each element of a JSON array, found by the stdlib parser."""
    text = data.decode("utf-8-sig")
    offset_bytes = len(data) - len(text.encode("utf-8"))  # a BOM
    decoder = json.JSONDecoder()
    out, i = [], text.index("[") + 1
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        if text[i] == "]":
            return out
        value, end = decoder.raw_decode(text, i)
        start_b = offset_bytes + len(text[:i].encode("utf-8"))
        raw = data[start_b : offset_bytes + len(text[:end].encode("utf-8"))]
        out.append((len(out), data[:start_b].count(b"\n") + 1, raw, value))
        i = end


def as_array(rows: list, indent: int | None = 2) -> bytes:
    return json.dumps(rows, ensure_ascii=False, indent=indent).encode("utf-8")


# ---------------------------------------------------------------------------------------- JSON arrays


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_streamed_in_any_chunk_size(tmp_path: Path, monkeypatch, chunk: int, indent) -> None:
    """Rows, verbatim bytes and line numbers do not depend on where the buffer refills fall."""
    monkeypatch.setattr(gio, "CHUNK", chunk)
    data = as_array(TRICKY_ROWS, indent)
    path = tmp_path / "rows.json"
    path.write_bytes(data)
    got = records(path)
    assert [(i, line, raw, value) for i, line, raw, value, _ in got] == oracle_array(data)
    assert [value for *_, value, _ in got] == TRICKY_ROWS
    assert all(error is None for *_, error in got)


def test_json_array_sample_small_chunks_equal_big_chunks(monkeypatch) -> None:
    path = DATA / "glaive_toolcall_zh_sample.json"
    big = records(path)
    monkeypatch.setattr(gio, "CHUNK", 7)
    assert records(path) == big
    assert [(i, line, raw, value) for i, line, raw, value, _ in big] == oracle_array(path.read_bytes())
    assert len(big) == 24 and big[16][1] == 474  # source row 64 starts on line 474


def test_json_array_raw_is_the_exact_source_slice(tmp_path: Path) -> None:
    data = b'[\n  {"a": 1},\n\n  {"b": "x\\"]"} ,{"c":[]}\n]\n'
    path = tmp_path / "a.json"
    path.write_bytes(data)
    got = list(read_records(path))
    assert [r.raw for r in got] == [b'{"a": 1}', b'{"b": "x\\"]"}', b'{"c":[]}']
    assert [r.line for r in got] == [2, 4, 4]
    assert [r.index for r in got] == [0, 1, 2]
    for r in got:
        assert data.find(r.raw) >= 0


def test_json_array_with_bom_and_leading_whitespace(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gio, "CHUNK", 3)
    data = b"\xef\xbb\xbf\n\n  [\n" + b'{"a": 1},\n{"b": 2}]'
    path = tmp_path / "bom.json"
    path.write_bytes(data)
    assert [(r.index, r.line, r.raw, r.value) for r in read_records(path)] == [
        (0, 4, b'{"a": 1}', {"a": 1}),
        (1, 5, b'{"b": 2}', {"b": 2}),
    ]


@pytest.mark.parametrize("content", [b"[]", b"[ \n ]", b"\n[]\n"])
def test_empty_json_array(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(content)
    assert records(path) == []


def test_json_array_of_scalars_keeps_them_as_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b'[1, "two", null, true, {"x": 3}]')
    got = list(read_records(path))
    assert [r.value for r in got] == [1, "two", None, True, {"x": 3}]
    assert [r.raw for r in got] == [b"1", b'"two"', b"null", b"true", b'{"x": 3}']


@pytest.mark.parametrize(
    ("content", "rows_before", "line"),
    [
        (b'[{"a": 1}, {"b": 2', 1, 1),  # cut inside a row
        (b'[{"a": 1},\n{"b": "unterminated', 1, 2),  # cut inside a string
        (b'[{"a": 1},\n', 1, 2),  # cut after a comma
        (b'[{"a": 1}', 1, 1),  # no closing bracket
        (b"[", 0, 1),
    ],
)
def test_truncated_json_array(tmp_path: Path, content: bytes, rows_before: int, line: int, monkeypatch) -> None:
    monkeypatch.setattr(gio, "CHUNK", 4)
    path = tmp_path / "cut.json"
    path.write_bytes(content)
    got = list(read_records(path))
    assert len(got) == rows_before + 1
    assert all(r.error is None for r in got[:-1])
    last = got[-1]
    assert last.error is not None and last.error.code == "truncated-input"
    assert last.index == rows_before and last.line == line


def test_json_array_missing_comma_stops_with_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "nocomma.json"
    path.write_bytes(b'[{"a": 1}\n {"b": 2}]')
    got = list(read_records(path))
    assert got[0].value == {"a": 1}
    assert got[1].error.code == "invalid-json" and got[1].line == 2
    assert "expected ',' or ']'" in got[1].error.message


def test_json_array_bad_element_is_one_rejected_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"a": 1},\n{"b": tru},\n{"c": "\xff\xfe"},\n{"d": 4}]')
    got = list(read_records(path))
    assert [r.index for r in got] == [0, 1, 2, 3]
    assert [r.error.code if r.error else None for r in got] == [None, "invalid-json", "invalid-utf8", None]
    assert [r.line for r in got] == [1, 2, 3, 4]
    assert got[2].raw == b'{"c": "\xff\xfe"}'


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_trailing_comma_is_one_record_at_its_line(tmp_path: Path, monkeypatch, chunk: int, indent) -> None:
    """Also where the buffer was compacted past the comma (small chunks)."""
    monkeypatch.setattr(gio, "CHUNK", chunk)
    data = as_array(TRICKY_ROWS, indent)[:-1].rstrip() + b",\n\n  ]\n"
    path = tmp_path / "rows.json"
    path.write_bytes(data)
    got = records(path)
    assert [(i, line, raw, value) for i, line, raw, value, _ in got[:-1]] == oracle_array(data)
    line = data[: data.rindex(b",")].count(b"\n") + 1
    last = len(TRICKY_ROWS) - 1
    message = f"trailing comma after row {last} at line {line}: JSON allows no ',' before ']'; remove it"
    assert got[-1] == (len(TRICKY_ROWS), line, b",", None, gio.Issue("invalid-json", "file", message))


def test_json_array_trailing_comma_then_more_data(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_bytes(b'[{"a": 1},\n]\n{"b": 2}\n')
    got = records(path)
    assert [(i, line, raw) for i, line, raw, *_ in got] == [(0, 1, b'{"a": 1}'), (1, 1, b","), (2, 3, b'{"b": 2}\n')]
    assert "trailing comma" in got[1][4].message and "goes on after the JSON array" in got[2][4].message


# ---------------------------------------------------------------------------------------- JSONL


def test_jsonl_blank_lines_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \r\n{"b": "x y"}\r\n\n{"c": 3}')
    got = list(read_records(path))
    assert [(r.index, r.line, r.raw, r.value) for r in got] == [
        (0, 1, b'{"a": 1}', {"a": 1}),
        (1, 4, b'{"b": "x y"}', {"b": "x y"}),
        (2, 6, b'{"c": 3}', {"c": 3}),
    ]


def test_jsonl_invalid_lines_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2,}\n\n{"t": "\xc3\x28"}\n{"n": NaN}\n{"a": 5}\n')
    got = list(read_records(path))
    assert [(r.index, r.line, r.error.code if r.error else None) for r in got] == [
        (0, 1, None),
        (1, 2, "invalid-json"),
        (2, 4, "invalid-utf8"),
        (3, 5, "invalid-json"),
        (4, 6, None),
    ]
    assert got[1].raw == b'{"a": 2,}'
    assert "byte 7" in got[2].error.message


def test_big_integers_are_kept_exactly(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    path = tmp_path / "big.jsonl"
    path.write_text(f'{{"n": {big}, "m": -{big}}}\n', encoding="utf-8")
    [record] = read_records(path)
    assert record.error is None and record.value == {"n": big, "m": -big}
    array = tmp_path / "big.json"
    array.write_text(f'[{{"n": {big}}}]', encoding="utf-8")
    assert [r.value for r in read_records(array)] == [{"n": big}]


def test_json_that_no_utf8_output_can_hold_is_rejected(tmp_path: Path) -> None:
    """The stdlib parser accepts a lone surrogate escape and 1e400; neither can be written back."""
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b'{"a": "\\ud800"}\n{"a": "\\ud83d\\ude00"}\n{"a": 1e400}\n{"a": NaN}\n')
    got = list(read_records(path))
    assert [r.error.code if r.error else None for r in got] == ["invalid-json", None, "invalid-json", "invalid-json"]
    assert "surrogate" in got[0].error.message and got[1].value == {"a": "\U0001f600"}
    assert "out of range" in got[2].error.message


@pytest.mark.parametrize("content", [b"", b"   \n\n\t\r\n", b"\xef\xbb\xbf"])
def test_empty_and_whitespace_only_files_have_no_rows(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert records(path) == []


# ---------------------------------------------------------------------------------------- gzip


@pytest.mark.parametrize("name", ["glaive_toolcall_zh_sample.json", "openai_toolcall_sample.jsonl"])
def test_gzip_reads_like_the_plain_file(tmp_path: Path, name: str, monkeypatch) -> None:
    plain = DATA / name
    packed = tmp_path / f"{name}.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = records(plain)
    assert records(packed) == expected
    monkeypatch.setattr(gio, "CHUNK", 7)
    assert records(packed) == expected


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    data = "".join(json.dumps({"i": i, "pad": "x" * 50}) + "\n" for i in range(200)).encode()
    packed = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    got = list(read_records(path))
    assert got[-1].error is not None and got[-1].error.code == "truncated-input"
    assert all(r.error is None for r in got[:-1]) and len(got) < 200
    array = tmp_path / "cut.json.gz"
    packed = gzip.compress(as_array([{"i": i, "pad": "x" * 50} for i in range(200)]))
    array.write_bytes(packed[: len(packed) // 2])
    assert list(read_records(array))[-1].error.code == "truncated-input"


# ---------------------------------------------------------------------------------------- Parquet


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "metadata": "x"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    got = list(read_records(path))
    assert [r.index for r in got] == [0, 1]
    assert all(r.line is None and r.error is None for r in got)
    # Arrow merged the message structs: the missing metadata came back as null
    assert got[1].value == {
        "messages": [
            {"role": "user", "content": "a", "metadata": None},
            {"role": "assistant", "content": "b", "metadata": None},
        ]
    }
    assert json.loads(got[1].raw) == got[1].value
    # and conversion removes those nulls again
    from glmdata.convert import convert_file

    results = list(convert_file(path))
    assert [r.row for r in results] == [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "metadata": "x"}]},
        rows[1],
    ]
    assert ("null-fields", "messages[0].metadata") in results[1].repairs


# ---------------------------------------------------------------------------------------- stdin


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BufferedReader(io.BytesIO(data))


@pytest.mark.parametrize("name", ["glaive_toolcall_zh_sample.json", "advertisegen_messages_sample.jsonl"])
@pytest.mark.parametrize("packed", [False, True])
def test_stdin(monkeypatch, name: str, packed: bool) -> None:
    data = (DATA / name).read_bytes()
    monkeypatch.setattr(sys, "stdin", _Stdin(gzip.compress(data) if packed else data))
    assert records("-") == records(DATA / name)


def test_stdin_parquet(tmp_path: Path, monkeypatch) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "a", "output": "b"}]), path)
    monkeypatch.setattr(sys, "stdin", _Stdin(path.read_bytes()))
    assert [r.value for r in read_records("-")] == [{"instruction": "a", "output": "b"}]


# ---------------------------------------------------------------------------------------- errors opening


def test_missing_file_and_directory_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_records(tmp_path / "nope.json"))
    with pytest.raises(InputError, match="is a directory"):
        list(read_records(tmp_path))


@pytest.mark.parametrize(
    ("codec", "encoding"),
    [("utf-16-le", "UTF-16 LE"), ("utf-16-be", "UTF-16 BE"), ("utf-32-le", "UTF-32 LE"), ("utf-32-be", "UTF-32 BE")],
)
@pytest.mark.parametrize("layout", ["jsonl", "array"])
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_utf16_and_utf32_raise_input_error_once(
    tmp_path: Path, monkeypatch, codec: str, encoding: str, layout: str, packed: bool
) -> None:
    text = "\ufeff" + ('{"a": 1}\n{"a": 2}\n' if layout == "jsonl" else '[{"a": 1},\n{"a": 2}]')
    data = text.encode(codec)
    data = gzip.compress(data) if packed else data
    path = tmp_path / "rows.data"
    path.write_bytes(data)
    for read in (read_records, gio.read_blocks):
        with pytest.raises(InputError, match=f"^{path} is {encoding} text .* e.g. .*iconv -f {encoding[:6]} -t UTF-8"):
            list(read(path))
    monkeypatch.setattr(sys, "stdin", _Stdin(data))
    with pytest.raises(InputError, match=f"^stdin is {encoding} text"):
        list(read_records("-"))


def test_a_closed_stdin_raises_input_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)  # Python's stdin when started with fd 0 closed
    with pytest.raises(InputError, match="^stdin is closed; give the data as a file, or pipe it in"):
        list(read_records("-"))
    fd = os.open(tmp_path / "w", os.O_WRONLY | os.O_CREAT)  # open, but not for reading: EBADF
    with open(fd, encoding="utf-8") as write_only:
        monkeypatch.setattr(sys, "stdin", write_only)
        with pytest.raises(InputError, match="^stdin is closed"):
            list(gio.read_blocks("-"))


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_at_its_first_read_raises_input_error() -> None:
    with pytest.raises(InputError, match=r"^/proc/self/mem: cannot read \(Input/output error\)$"):
        list(read_records("/proc/self/mem"))


# ---------------------------------------------------------------------------------------- writing


def test_atomic_writer_leaves_no_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as out:
            out.write(b"partial\n")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writer_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(target) as out:
            out.write(b"new\n")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_writer_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with atomic_writer(target) as out:
        out.write(b"new\n")
        assert target.read_bytes() == b"old\n"  # nothing visible until the block ends
    assert target.read_bytes() == b"new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_writer_gives_ordinary_permissions(tmp_path: Path) -> None:
    """Not mkstemp's private 0600: a training job run by another user must be able to read it."""
    umask = os.umask(0o022)
    try:
        with atomic_writer(tmp_path / "new.jsonl") as out:
            out.write(b"x\n")
        assert (tmp_path / "new.jsonl").stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.jsonl"
        kept.write_bytes(b"old\n")
        kept.chmod(0o640)
        with atomic_writer(kept) as out:
            out.write(b"new\n")
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_write_jsonl_keeps_key_order_and_text(tmp_path: Path) -> None:
    rows = [{"z": 1, "a": "汉字"}, {"messages": []}]
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(rows, path) == 2
    assert path.read_bytes() == '{"z":1,"a":"汉字"}\n{"messages":[]}\n'.encode()
    assert [r.value for r in read_records(path)] == rows


# ---------------------------------------------------------------------------------------- JSONL blocks


def _from_blocks(path, size: int) -> list[tuple]:
    """read_blocks flattened back into records, each block's row count checked on the way."""
    out = []
    for item in gio.read_blocks(path, size):
        if isinstance(item, gio.Lines):
            got = list(item.records(parse=False))
            assert len(got) == item.rows and (not got or got[0].index == item.index)
            out.extend(got)
        else:
            out.append(item)
    return [(r.index, r.line, r.raw, r.value, r.error) for r in out]


_LINE_PARTS = [
    b'{"a": 1}',
    b'{"b": "x\\ny"}',
    b"",
    b"   ",
    b"\r",
    b"\t{}\t",
    b"not json",
    b"\xef\xbb\xbf{}",
    b'{"c": "' + b"z" * 40 + b'"}',
]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(_LINE_PARTS), max_size=12),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
    st.integers(1, 64),
)
def test_blocks_hold_the_rows_read_records_reads(lines, newline, trailing, size):
    """Blocks of whole lines (the commands' unit of work), at any block size, give back exactly
    the rows of read_records: blank and whitespace lines, CRLF, a BOM, no final newline, lines
    longer than a block."""
    import tempfile

    data = newline.join(lines) + (newline if trailing and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_bytes(data)
        expected = records(path, parse=False)
        assert _from_blocks(path, size) == expected
        packed = Path(tmp) / "rows.jsonl.gz"
        packed.write_bytes(gzip.compress(data))
        assert _from_blocks(packed, size) == records(packed, parse=False)


def test_blocks_of_a_truncated_gzip_end_like_read_records(tmp_path: Path) -> None:
    data = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(3000))
    packed = tmp_path / "cut.jsonl.gz"
    packed.write_bytes(gzip.compress(data)[:-2000])
    expected = records(packed, parse=False)
    assert expected[-1][-1].code == "truncated-input"
    for size in (100, 4096, 1 << 20):
        assert _from_blocks(packed, size) == expected


def test_blocks_flow_from_a_pipe_as_lines_come(monkeypatch) -> None:
    """From stdin, a block is yielded as soon as whole lines are there: rows are not held back
    until a megabyte has come."""
    import threading

    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.FileIO(read_fd, "r"))))
    os.write(write_fd, b'{"a": 1}\n{"a": 2}\n')
    blocks = gio.read_blocks("-", 1 << 20)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(next(blocks)))
    reader.start()
    reader.join(timeout=10)
    os.close(write_fd)
    assert got and got[0].rows == 2
    assert list(blocks) == []


def test_blocks_after_long_leading_whitespace_keep_their_line_numbers(tmp_path: Path) -> None:
    """More leading whitespace than the layout sniffing peeks at: the stream is then re-assembled
    from what was read, and the blocks' line numbers must still be the file's."""
    data = b"\n" * 100 + b"   \r\n" * 30 + b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(50))
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    expected = records(path, parse=False)
    assert [r[1] for r in expected][:2] == [131, 132]
    for size in (7, 64, 1 << 20):
        assert _from_blocks(path, size) == expected
