"""Reading rows from any supported file, and writing files atomically.

Inputs: a JSON array (streamed element by element, never loaded whole), JSONL, gzip of either,
Parquet, or ``-`` for stdin. Each row comes with its verbatim bytes and its line number, so that a
rejected row can be kept exactly as it was and reported where it is.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from shlex import quote
from typing import IO, Any

import orjson

from glmdata.issues import Issue
from glmdata.jsontext import compact, may_hold_long_number

CHUNK = 1 << 20
_WS = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
# UTF-32 first: its little-endian mark starts with UTF-16's
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 BE"),
    (b"\xff\xfe", "UTF-16 LE"),
    (b"\xfe\xff", "UTF-16 BE"),
)


_CLOSED_STDIN = "stdin is closed; give the data as a file, or pipe it in (glmdata convert - < FILE)"


class InputError(Exception):
    """The input cannot be read at all (missing, a directory, unsupported): a usage/I/O error."""


@dataclass(slots=True)
class Record:
    """One row as read: its position, its verbatim bytes, and the parsed value or why it failed."""

    index: int
    line: int | None
    raw: bytes
    value: Any = None
    error: Issue | None = None
    #: False for rows that are not JSON text in the source (Parquet): ``raw`` is only a rendering
    from_text: bool = True


def read_records(path: str | os.PathLike, *, parse: bool = True) -> Iterator[Record]:
    """Yield every row of ``path`` (``"-"`` is stdin) in order. Never raises for bad rows; raises
    :class:`InputError` when the file itself cannot be opened.

    ``parse=False`` leaves the rows of JSON text unparsed (``value`` and ``error`` None), for
    callers that parse ``raw`` elsewhere (the worker processes of ``convert_file(..., workers=N)``)."""
    with _open(path) as stream:
        layout, stream = _layout(stream, path)
        if layout == "jsonl":
            yield from _line_records(stream, 1, 0, parse)
        else:
            yield from _not_jsonl(layout, stream, path, parse)


def read_blocks(path: str | os.PathLike, size: int = CHUNK) -> Iterator[Lines | Record]:
    """Like ``read_records(path, parse=False)``, but a JSONL file comes as :class:`Lines` blocks of
    about ``size`` bytes of whole lines, neither split nor parsed (split and parsed in the worker
    processes of ``convert --workers N``); from a pipe, a block as soon as whole lines are there.
    Other layouts come as unparsed records."""
    with _open(path) as stream:
        layout, stream = _layout(stream, path)
        if layout == "jsonl":
            yield from _blocks(stream, size, may_wait=_may_wait(path))
        else:
            yield from _not_jsonl(layout, stream, path, parse=False)


def _may_wait(path: str | os.PathLike) -> bool:
    """Can reading ``path`` wait for a writer (stdin, a pipe, a socket), unlike a regular file?"""
    import stat

    try:
        return str(path) == "-" or not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def _layout(stream: io.BufferedReader, path: str | os.PathLike) -> tuple[str | Record, io.BufferedReader]:
    """``"jsonl"``, ``"array"`` or ``"parquet"``, or, for a compressed stream cut short at once, the
    one record that says so; and the stream to read from. UTF-16 or UTF-32 text is an InputError."""
    try:
        head = stream.peek(4)[:4]
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        return _cut_short(0, exc), stream
    if head.startswith(b"PAR1"):
        return "parquet", stream
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            raise InputError(_wide_text(path, encoding, isinstance(stream.raw, _Gunzip)))
    first, stream = _first_byte(stream)
    return ("array" if first == b"[" else "jsonl"), stream


def _wide_text(path: str | os.PathLike, encoding: str, packed: bool) -> str:
    """The error for UTF-16 or UTF-32 text, with the command that re-encodes it."""
    name = "IN" if str(path) == "-" else str(path)
    plain = Path(name[:-3] if packed and name.endswith(".gz") else name)
    out = "OUT" if name == "IN" else plain.with_name(f"{plain.stem}.utf8{plain.suffix}")
    iconv = f"iconv -f {encoding[:6]} -t UTF-8"
    fix = f"gunzip -c {quote(name)} | {iconv}" if packed else f"{iconv} {quote(name)}"
    return (
        f"{'stdin' if name == 'IN' else name} is {encoding} text (it starts with that byte-order mark), and "
        f"glmdata reads UTF-8: re-encode it, e.g. {fix} > {quote(str(out))}"
    )


def _not_jsonl(
    layout: str | Record, stream: io.BufferedReader, path: str | os.PathLike, parse: bool
) -> Iterator[Record]:
    if isinstance(layout, Record):
        yield layout
    elif layout == "parquet":
        yield from _parquet(stream, path)
    else:
        yield from _json_array(stream, parse)


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[io.BufferedReader]:
    if str(path) == "-":
        if sys.stdin is None:
            raise InputError(_CLOSED_STDIN)
        stream: IO[bytes] = sys.stdin.buffer
    else:
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{p} is a directory; give a data file (JSON, JSONL, .gz or Parquet)")
        try:
            stream = open(p, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InputError(f"{p}: no such file") from None
        except OSError as exc:
            raise InputError(f"{p}: cannot open ({exc.strerror})") from None
    try:
        reader: io.BufferedReader = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)  # type: ignore[arg-type]
        try:
            head = reader.peek(4)[:4]
        except OSError as exc:
            if str(path) == "-" and exc.errno == errno.EBADF:
                raise InputError(_CLOSED_STDIN) from None
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        if head[:2] == b"\x1f\x8b":
            reader = io.BufferedReader(_Gunzip(gzip.GzipFile(fileobj=reader)), CHUNK)
        yield reader
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


class _Gunzip(io.RawIOBase):
    """Decompressed bytes as they come. GzipFile.readinto fills the whole buffer first, so a file
    cut short would fail before its first row; read1 fails only where the cut is, and every row
    before it is read."""

    def __init__(self, gz: gzip.GzipFile):
        self.gz = gz

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.gz.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _first_byte(stream: io.BufferedReader) -> tuple[bytes, io.BufferedReader]:
    """The first byte that is not a BOM or whitespace, and the stream to read from, unchanged.

    ``peek`` shows at most one buffer: when it is all whitespace, read on until the first other
    byte (or the end) and put what was read back in front of the stream, so that a JSON array
    after any amount of leading whitespace is still read as an array, with its line numbers."""
    try:
        data = stream.peek(64)
    except (EOFError, gzip.BadGzipFile, OSError):
        return b"", stream
    first = data.lstrip(_BOM).lstrip(_WS)[:1]
    if first or not data:
        return first, stream
    seen = []
    try:
        while True:
            chunk = stream.read1(CHUNK)
            if not chunk:
                break
            seen.append(chunk)
            first = (chunk.lstrip(_BOM) if len(seen) == 1 else chunk).lstrip(_WS)[:1]
            if first:
                break
    except (EOFError, gzip.BadGzipFile, OSError):
        pass  # the reader meets the same error again right after what was read
    return first, io.BufferedReader(_Prefixed(b"".join(seen), stream), CHUNK)


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: io.BufferedReader):
        self.prefix, self.stream = memoryview(prefix), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            n = min(len(buffer), len(self.prefix))
            buffer[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        data = self.stream.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def parse_row(raw: bytes) -> tuple[Any, Issue | None]:
    """Parse one JSON value from bytes; on failure say whether it is bad UTF-8 or bad JSON."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    else:
        if not may_hold_long_number(raw):
            return value, None
        first_error = "integer beyond 64 bits"  # orjson read it as a float, losing digits
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Issue(
            "invalid-utf8", "row", f"byte {exc.start} is not valid UTF-8 ({raw[exc.start : exc.start + 4]!r})"
        )
    try:  # orjson refuses integers beyond 64 bits and deep nesting; the stdlib accepts big integers
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except (json.JSONDecodeError, ValueError) as exc:
        return None, Issue("invalid-json", "row", f"not valid JSON: {exc}")
    except RecursionError:
        return None, Issue("invalid-json", "row", f"not valid JSON: {first_error}")
    try:  # the stdlib also accepts lone surrogate escapes, which no UTF-8 output can hold
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, Issue(
            "invalid-json",
            "row",
            f"not valid JSON: the escape \\u{ord(exc.object[exc.start]):04x} is half a surrogate pair, not a character",
        )
    except RecursionError:
        return None, Issue("invalid-json", "row", f"not valid JSON: {first_error}")
    return value, None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _line_records(lines: Iterable[bytes], line: int, index: int, parse: bool) -> Iterator[Record]:
    """The rows of JSONL ``lines``, the first of which is line number ``line`` and holds row
    ``index``; a compressed stream cut short ends them with the record that says so."""
    try:
        for line_no, text in enumerate(lines, line):
            raw = _line_row(text, line_no)
            if raw:
                value, error = parse_row(raw) if parse else (None, None)
                yield Record(index, line_no, raw, value, error)
                index += 1
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        yield _cut_short(index, exc)


def _line_row(line: bytes, line_no: int) -> bytes:
    """The row on a JSONL line: the line without a leading BOM (line 1) and outer whitespace;
    empty for a blank line, which is not a row."""
    if line_no == 1 and line.startswith(_BOM):
        line = line[len(_BOM) :]
    return line.strip(_WS)


def _cut_short(index: int, exc: BaseException) -> Record:
    return Record(
        index, None, b"", None, Issue("truncated-input", "file", f"the compressed stream is cut short ({exc})")
    )


@dataclass(slots=True)
class Lines:
    """Whole consecutive lines of a JSONL file, unsplit, with the row index and line number of the
    first and the number of rows (non-blank lines) they hold."""

    index: int
    line: int
    data: bytes
    rows: int

    def records(self, parse: bool = True) -> Iterator[Record]:
        """The rows, as ``read_records`` reads them from the whole file."""
        return _line_records(self.data.split(b"\n"), self.line, self.index, parse)


def _count_rows(data: bytes, line: int) -> int:
    """Rows (non-blank lines) in ``data``, whole lines starting at line number ``line``: one per
    newline when no line can be blank (none starts with whitespace or a BOM), else counted."""
    if not data:
        return 0
    if data[:1] in (b" ", b"\t", b"\r", b"\n", _BOM[:1]) or _MAYBE_BLANK.search(data):
        return sum(1 for line_no, part in enumerate(data.split(b"\n"), line) if _line_row(part, line_no))
    return data.count(b"\n") + (not data.endswith(b"\n"))


# A line that may be blank starts with whitespace (or is empty): without one, every line is a row.
_MAYBE_BLANK = re.compile(rb"\n[ \t\r\n]")


def _blocks(stream: io.BufferedReader, size: int, may_wait: bool) -> Iterator[Lines | Record]:
    """The JSONL stream as :class:`Lines` of about ``size`` bytes (more for a longer line); from a
    source that ``may_wait`` for a writer (a pipe), the whole lines there are as soon as there are
    any, so that rows flow as they come. A compressed stream cut short ends with the record that
    says so, after the whole lines read before the cut."""
    index, line, pending, failure, want = 0, 1, b"", None, size
    while True:
        parts, got = [pending], len(pending)
        eof = False
        try:
            while got < want:
                part = stream.read1(size)
                if not part:
                    eof = True
                    break
                parts.append(part)
                got += len(part)
                if may_wait and b"\n" in part:
                    break
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            failure, eof = exc, True
        data = b"".join(parts)
        cut = len(data) if eof and failure is None else data.rfind(b"\n") + 1
        block, pending = data[:cut], data[cut:]
        # a line longer than what was read: read twice as much before looking again, so that a
        # huge line costs linear time, not a copy and a search per read
        want = size if cut else 2 * len(data)
        rows = _count_rows(block, line)
        if rows:
            yield Lines(index, line, block, rows)
        index += rows
        line += block.count(b"\n")
        if eof:
            break
    if failure is not None:
        yield _cut_short(index, failure)


# ------------------------------------------------------------------------------------- JSON arrays

# Inside JSON strings, an escape is a backslash and one more byte: replacing ``\\`` and then ``\"``
# with two bytes that are neither leaves a copy of the text, the same length, whose quotes all
# open or close strings. On that copy, this pattern runs over everything up to the next bracket
# that is not inside a string (strings whole, in C).
_TO_BRACKET = re.compile(rb'[^"\[\]{}]*+(?:"[^"]*+"[^"\[\]{}]*+)*+')
_SCALAR_END = re.compile(rb"[,\]} \t\r\n]")


def _unescaped(data: bytes) -> bytes:
    return data.replace(b"\\\\", b"__").replace(b'\\"', b"__")


class _ArrayScanner:
    """Finds where each element of a top-level JSON array ends, in a byte stream with bounded
    memory, without parsing it: the rows are parsed once, later, where they are converted."""

    def __init__(self, stream: io.BufferedReader):
        self.stream = stream
        self.buf = b""
        self.plain = b""  # ``buf`` with its escapes blanked (``_unescaped``)
        self.eof = False
        self.line = 1  # line number at buf[line_pos]
        self.line_pos = 0

    def fill(self) -> bool:
        # read1 in a loop, not read(n): read(n) of a gzip cut short raises and drops everything it
        # had decompressed, so the rows before the cut would be lost with it.
        if self.eof:
            return False
        want, parts, got = max(CHUNK, len(self.buf)), [], 0
        try:
            while got < want:
                part = self.stream.read1(want - got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except (EOFError, gzip.BadGzipFile, OSError):
            self.eof = True  # what came before the failure is still read
        if not parts:
            self.eof = True
            return False
        # backslashes at the end of what was read may pair with the bytes that come now
        keep = len(self.buf.rstrip(b"\\"))
        self.buf += b"".join(parts)
        self.plain = self.plain[:keep] + _unescaped(self.buf[keep:])
        return True

    def line_at(self, pos: int) -> int:
        self.line += self.buf.count(b"\n", self.line_pos, pos)
        self.line_pos = pos
        return self.line

    def compact(self, pos: int) -> int:
        if pos < CHUNK:
            return pos
        self.line_at(pos)
        self.buf, self.plain = self.buf[pos:], self.plain[pos:]
        self.line_pos = 0
        return 0

    def skip_ws(self, pos: int) -> int:
        while True:
            while pos < len(self.buf) and self.buf[pos] in _WS:
                pos += 1
            if pos < len(self.buf) or not self.fill():
                return pos

    def value_end(self, pos: int) -> int:
        """Index after the JSON value starting at ``pos``; -1 if the stream ends first."""
        opener = self.buf[pos]
        if opener not in b'[{"':  # a number or a literal: up to the next delimiter
            while (found := _SCALAR_END.search(self.buf, pos)) is None:
                if not self.fill():
                    return -1
            return found.start()
        if opener == 0x22:
            while (end := self.plain.find(b'"', pos + 1)) < 0:
                if not self.fill():
                    return -1
            return end + 1
        depth = 0
        while True:
            pos = _TO_BRACKET.match(self.plain, pos).end()  # type: ignore[union-attr] # it matches ""
            if pos == len(self.plain) or self.plain[pos] == 0x22:  # the end of what is read, or a string it cuts
                if not self.fill():
                    return -1
                continue
            depth += 1 if self.plain[pos] in b"[{" else -1
            pos += 1
            if depth == 0:
                return pos


def _json_array(stream: io.BufferedReader, parse: bool) -> Iterator[Record]:
    scan = _ArrayScanner(stream)
    scan.fill()
    if scan.buf.startswith(_BOM):
        scan.buf, scan.plain = scan.buf[len(_BOM) :], scan.plain[len(_BOM) :]
    pos = scan.skip_ws(0) + 1  # past "["
    index = 0
    while True:
        pos = scan.skip_ws(pos)
        if pos >= len(scan.buf):
            yield _not_closed(scan, pos, index)
            return
        if scan.buf[pos] == 0x5D:  # an empty array, or a comma before the bracket
            if index:
                yield _trailing_comma(scan, pos, index)
            yield from _after_array(scan, pos + 1, index + (index > 0))
            return
        start, line = pos, scan.line_at(pos)
        end = scan.value_end(start)
        if end < 0:
            cut = Issue("truncated-input", "file", f"row {index} (line {line}) is cut short: the file ends inside it")
            yield Record(index, line, scan.buf[start:], None, cut)
            return
        raw = scan.buf[start:end]
        value, error = parse_row(raw) if parse else (None, None)
        yield Record(index, line, raw, value, error)
        index += 1
        pos = scan.skip_ws(end)
        if pos >= len(scan.buf):
            yield _not_closed(scan, pos, index)
            return
        sep = scan.buf[pos]
        if sep == 0x5D:  # ]
            yield from _after_array(scan, pos + 1, index)
            return
        if sep != 0x2C:  # ,
            line = scan.line_at(pos)
            message = (
                f"expected ',' or ']' after row {index - 1} at line {line}, found {chr(sep)!r}; reading stops here"
            )
            yield Record(index, line, scan.buf[pos : pos + 80], None, Issue("invalid-json", "file", message))
            return
        pos = scan.compact(pos + 1)


def _trailing_comma(scan: _ArrayScanner, pos: int, index: int) -> Record:
    comma = scan.buf.rfind(b",", 0, pos)  # -1: compacted away, right before buf[0], on its line
    line = scan.line_at(max(comma, 0))
    message = f"trailing comma after row {index - 1} at line {line}: JSON allows no ',' before ']'; remove it"
    return Record(index, line, b",", None, Issue("invalid-json", "file", message))


def _not_closed(scan: _ArrayScanner, pos: int, index: int) -> Record:
    issue = Issue("truncated-input", "file", "the JSON array is not closed: the file is cut short")
    return Record(index, scan.line_at(pos), b"", None, issue)


def _after_array(scan: _ArrayScanner, pos: int, index: int) -> Iterator[Record]:
    """Only whitespace may follow the closing bracket. Anything else (JSONL whose first line is an
    array, two arrays in a row) is reported, not silently dropped."""
    pos = scan.skip_ws(pos)
    if pos < len(scan.buf):
        line = scan.line_at(pos)
        message = (
            f"the file goes on after the JSON array it starts with (line {line}); a file is one JSON array, or JSONL "
            "(one object per line; is the first line an array?); reading stops here"
        )
        yield Record(index, line, scan.buf[pos : pos + 80], None, Issue("invalid-json", "file", message))


def _parquet(stream: io.BufferedReader, path: str | os.PathLike) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'glmdata[parquet]'") from None
    import pyarrow as pa

    source = stream if str(path) != "-" else io.BytesIO(stream.read())
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError, ValueError) as exc:  # starts with PAR1, but no footer
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
    index = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                yield Record(index, None, orjson.dumps(value, default=str), value, None, from_text=False)
                index += 1
    except (pa.ArrowException, OSError, ValueError) as exc:  # a damaged row group
        yield Record(
            index,
            None,
            b"",
            None,
            Issue("truncated-input", "file", f"the Parquet file is damaged after row {index - 1}: {exc}"),
        )


# ---------------------------------------------------------------------------------------- writing


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary writing; the file appears only when the block succeeds.

    Data goes to a temporary file beside the target, which is renamed over it at the end, so an
    interrupted run leaves no partial output. ``"-"`` writes to stdout.
    """
    if str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        os.chmod(tmp, _mode_for(target))  # mkstemp makes the file private (0600)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _mode_for(target: Path) -> int:
    """The permissions a plain ``open(target, "w")`` would give: the old file's, or 0666 less the umask."""
    try:
        return os.stat(target).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def dump_row(row: Any) -> bytes:
    """One JSONL line: compact JSON, key order and non-ASCII text kept."""
    return compact(row) + b"\n"


def write_jsonl(rows: Iterable[Any], path: str | os.PathLike) -> int:
    """Write rows as JSONL atomically; returns how many were written."""
    count = 0
    with atomic_writer(path) as out:
        for row in rows:
            out.write(dump_row(row))
            count += 1
    return count
