"""The data path: any supported row -> repaired, checked GLM-4 messages row, or a rejection.

``convert_row`` handles one parsed row; ``convert_file`` streams a file and adds what needs the
whole file (duplicates); ``convert_chunks`` does the same in batches for the commands, which only
write and count; ``convert_batch`` runs inside ``datasets.Dataset.map(batched=True)``.
Every row in comes out as exactly one :class:`Result`: kept, rejected, or dropped as a duplicate.
"""

from __future__ import annotations

import os
import re
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from glmdata import formats
from glmdata.builder import MessagesBuilder
from glmdata.checks import check_row
from glmdata.io import Lines, Record, json_bytes, read_blocks, read_records
from glmdata.issues import Issue, RowError
from glmdata.repairs import REPAIRS, Fixer, strip_nulls
from glmdata.result import Result

CallStyle = Literal["native", "json"]


@dataclass(frozen=True)
class Options:
    """How to convert. ``disabled_repairs`` are names from :data:`glmdata.repairs.REPAIRS`."""

    from_format: str | None = None
    call_style: CallStyle = "native"
    disabled_repairs: frozenset[str] = frozenset()
    strict: bool = False
    dedupe: bool = False

    def __post_init__(self) -> None:
        if self.call_style not in ("native", "json"):
            raise ValueError(f"call_style must be 'native' or 'json', not {self.call_style!r}")
        unknown = set(self.disabled_repairs) - set(REPAIRS)
        if unknown:
            raise ValueError(f"unknown repair(s): {', '.join(sorted(unknown))}; known: {', '.join(REPAIRS)}")
        if self.from_format is not None:
            try:
                object.__setattr__(self, "from_format", formats.resolve(self.from_format))
            except KeyError:
                raise ValueError(f"unknown format {self.from_format!r}; known: {', '.join(formats.format_names())}") from None


def convert_row(value: Any, options: Options = Options(), *, index: int = 0, line: int | None = None, raw: bytes | None = None) -> Result:
    """Convert one parsed row. Never raises for bad data: problems are in ``result.issues``."""
    result = Result(index, line, raw if raw is not None else b"")
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")
        result.issues.append(Issue("not-an-object", "row", f"row is a JSON {kind}, not an object"))
        result.rejected = True
        return result
    fx = Fixer(options.disabled_repairs)
    try:
        if raw is None or b"null" in raw:
            value = strip_nulls(value, fx)
        name = options.from_format or formats.detect(value)
        if name is None:
            result.issues.append(Issue("unknown-format", "row", formats.describe_unknown(value)))
        else:
            result.format = name
            builder = MessagesBuilder(fx, options.call_style)
            formats.FORMATS[name].to_messages(value, fx, builder)
            row = builder.build()
            result.encoded = _encode(row)
            result.row = row
            result.issues.extend(fx.warnings)
            result.issues.extend(check_row(row))
    except RowError as exc:
        result.issues.extend(exc.issues)
    except RecursionError:
        result.issues.append(Issue("schema", "row", "nested too deeply to be a chat row"))
    result.repairs = fx.applied
    result.rejected = result.row is None or (bool(result.issues) and (options.strict or any(i.severity == "error" for i in result.issues)))
    return result


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encode(row: dict) -> bytes:
    """The row as compact JSON (what is written, and hashed for duplicates), serialized once.

    Rejects a row that no UTF-8 file can hold: JSON text inside a row (a tools string, call
    arguments) may escape half a surrogate pair, ``"\\ud800"``, which parses to no character."""
    try:
        return orjson.dumps(row)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, or an integer beyond 64 bits
        found = _find_surrogate(row, "")
        if found is not None:
            path, char = found
            raise RowError(Issue("invalid-json", path or "row", f"the escape \\u{ord(char):04x} is half a surrogate pair, not a character; no UTF-8 file can hold it")) from None
        return json_bytes(row)


def _find_surrogate(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (path, found.group()) if found else None
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), k, v) for k, v in value.items())
        for where, key, item in items:
            found = _find_surrogate(key, where) or _find_surrogate(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _find_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


def convert_rows(rows: Iterable[Any], options: Options = Options()) -> Iterator[Result]:
    """Convert parsed rows (dicts) in order, with duplicate detection across them."""
    return _with_duplicates((convert_row(value, options, index=i) for i, value in enumerate(rows)), options)


def convert_records(records: Iterable[Record], options: Options = Options()) -> Iterator[Result]:
    """Convert rows read by :func:`glmdata.io.read_records`, keeping their positions and bytes."""
    return _with_duplicates((_convert_record(record, options) for record in records), options)


def _convert_record(record: Record, options: Options) -> Result:
    if record.error is not None:
        return Result(record.index, record.line, record.raw, issues=[record.error], rejected=True)
    return convert_row(record.value, options, index=record.index, line=record.line, raw=record.raw)


def convert_file(path: str | os.PathLike, options: Options = Options(), *, workers: int = 1, decode: bool = True) -> Iterator[Result]:
    """Stream ``path`` (any supported format, ``"-"`` for stdin) into one Result per row, in order.

    ``workers`` > 1 converts in that many processes; results, their order and the bytes written
    are the same as with one. ``decode=False`` (with workers) leaves ``result.row`` None and only
    ``result.encoded`` set, sparing the main process the decoding when only the bytes are needed.
    Raises :class:`glmdata.io.InputError` when the file cannot be opened at all.
    """
    if workers <= 1:
        return convert_records(read_records(path), options)
    return _with_duplicates(_parallel(read_blocks(path, BLOCK_BYTES), options, workers, decode, path), options)


# Rows per batch sent to a worker, and a cap on a batch's source bytes: memory in flight stays
# bounded (a few batches per worker) whatever the rows' sizes.
BATCH = 512
BATCH_BYTES = 4 << 20
# JSONL goes to the commands' workers as blocks of whole lines of about this size (io.Lines).
BLOCK_BYTES = 1 << 19


def _parallel(items: Iterable[Record | Lines], options: Options, workers: int, decode: bool, source: Any) -> Iterator[Result]:
    """Convert batches of records in worker processes, in order, with at most a few batches in
    flight (memory stays bounded however large the input)."""
    from glmdata.io import parse_row

    for batch, converted in _in_pool(_convert_batch_worker, _batches(items), options, workers, source):
        # each row's verbatim bytes are here already: they do not travel back
        raws = [record.raw for record in batch.records(parse=False)] if isinstance(batch, Lines) else [item[2] for item in batch]
        for raw, (index, line, fmt, encoded, issues, repairs, rejected) in zip(raws, converted, strict=True):
            result = Result(index, line, raw, fmt, None, encoded, issues, repairs, rejected)
            if decode and encoded:
                result.row = parse_row(encoded)[0]
            yield result


class _FastSwitch:
    """A GIL switch interval of 0.2 ms while any pool runs in this process (pools may overlap:
    two ``convert_file`` generators), the caller's own restored after the last one."""

    def __init__(self) -> None:
        self.users, self.saved = 0, 0.005

    def __enter__(self) -> None:
        if self.users == 0:
            self.saved = sys.getswitchinterval()
            sys.setswitchinterval(0.0002)
        self.users += 1

    def __exit__(self, *exc: object) -> None:
        self.users -= 1
        if self.users == 0:
            sys.setswitchinterval(self.saved)


_FAST_SWITCH = _FastSwitch()


def _in_pool(work: Any, batches: Iterator[Any], options: Options, workers: int, source: Any) -> Iterator[tuple[Any, Any]]:
    """``(batch, work(batch, options))`` for every batch, in order, computed by ``workers``
    processes: this one and ``workers - 1`` forked ones. The forked ones have up to four batches
    each waiting; beyond that, while the oldest batch is not done, this process converts the next
    one itself rather than wait (it also reads, sends and merges: a worker of its own would
    compete with it for a core). Results that are done go out first. At most six batches per
    process are held, however large the input."""
    # The pool's threads in this process send batches and take results in; while this thread
    # converts, they would wait up to the default 5 ms for the GIL at each step (a result comes in
    # pieces of a pipe's size) and leave the workers idle.
    with _FAST_SWITCH:
        yield from _in_pool_ordered(work, batches, options, workers, source)


def _in_pool_ordered(work: Any, batches: Iterator[Any], options: Options, workers: int, source: Any) -> Iterator[tuple[Any, Any]]:
    import multiprocessing
    from collections import deque
    from multiprocessing.pool import AsyncResult

    with multiprocessing.get_context().Pool(workers - 1, initializer=_ignore_sigint) as pool:
        _widen_pipe(pool)
        # From a pipe, the next batch may be long in coming: it is read in a thread, started only
        # now, after the fork. Forked while that thread sat in a read of stdin, a worker inherits
        # stdin's lock held, and multiprocessing's start-up (which closes stdin) hangs on it for
        # good: such a worker never converts, nor dies with this process (seen in 1 of 4 runs).
        incoming = _Prefetch(batches) if _may_block(source) else _Direct(batches)
        try:
            pending: deque = deque()  # (batch, its result, or the pool's promise of it)
            while True:
                while pending and not (isinstance(pending[0][1], AsyncResult) and not pending[0][1].ready()):
                    yield _taken(pending)  # what is done goes out first
                if not pending and incoming.done:
                    return
                batch = incoming.next(wait=not pending) if len(pending) < 6 * workers else None
                if batch is None:  # nothing new yet, or enough in flight: wait on the oldest a moment
                    if pending:
                        pending[0][1].wait(0.002)
                elif sum(isinstance(outcome, AsyncResult) for _, outcome in pending) < 4 * (workers - 1):
                    # a block of a plain file goes as its place in the file: the worker reads it
                    sent = batch.detached() if isinstance(batch, Lines) else batch
                    pending.append((batch, pool.apply_async(work, (sent, options))))
                else:  # the workers have enough waiting and the oldest is not done: this process takes it
                    pending.append((batch, work(batch, options)))
        finally:
            incoming.close()


def _may_block(source: Any) -> bool:
    """Can reading ``source`` wait for a writer (stdin, a pipe, a socket), unlike a regular file?"""
    import stat

    try:
        return str(source) == "-" or not stat.S_ISREG(os.stat(source).st_mode)
    except OSError:
        return True


class _Direct:
    """``_Prefetch``'s interface over a source that never keeps a reader waiting: read here."""

    def __init__(self, batches: Iterator[Any]):
        self._batches = batches
        self.done = False

    def next(self, wait: bool) -> Any:
        batch = None if self.done else next(self._batches, None)
        self.done = batch is None
        return batch

    def close(self) -> None:
        pass


class _Prefetch:
    """The next few batches, read from ``batches`` in a thread, so that waiting for input (a
    pipe) never holds back results that are done; an exception in the reading is raised here."""

    _END = object()

    def __init__(self, batches: Iterator[Any], depth: int = 2):
        import queue
        import threading

        self._queue: Any = queue.Queue(depth)
        self._batches = batches
        self._stop = threading.Event()
        self.done = False
        threading.Thread(target=self._read, daemon=True, name="glmdata-reader").start()

    def _read(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consuming thread
            self._put(exc)

    def _put(self, item: Any) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self, wait: bool) -> Any:
        """The next batch; None at the end, or when ``wait`` is False and none is there yet."""
        import queue

        if self.done:
            return None
        try:
            item = self._queue.get(timeout=None if wait else 0.002)
        except queue.Empty:
            return None
        if item is self._END:
            self.done = True
            return None
        if isinstance(item, BaseException):
            self.done = True
            raise item
        return item

    def close(self) -> None:
        self._stop.set()


def _taken(pending: Any) -> tuple[Any, Any]:
    """The oldest batch in flight and its result, waited for if need be."""
    from multiprocessing.pool import AsyncResult

    batch, outcome = pending.popleft()
    return batch, outcome.get() if isinstance(outcome, AsyncResult) else outcome


def _widen_pipe(pool: Any) -> None:
    """Linux: let the pipe that brings results back hold a whole block's result (1 MB, the
    unprivileged maximum), so that a worker hands it over in one write and goes on converting;
    with the default 64 kB it waits for this process to take each piece, which takes long while
    this process converts a block of its own."""
    import fcntl

    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    reader = getattr(getattr(pool, "_outqueue", None), "_reader", None)
    if setpipe is None or reader is None:
        return
    try:
        fcntl.fcntl(reader.fileno(), setpipe, 1 << 20)
    except OSError:  # above /proc/sys/fs/pipe-max-size, or not a pipe: the default size works too
        pass


def _portable(record: Record) -> tuple:
    # a text row travels as its bytes and is parsed in the worker; a Parquet row as its value
    return (record.index, record.line, record.raw, record.error, None if record.from_text else record.value, record.from_text)


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the pool
    # The CLI's SIGTERM/SIGHUP handlers, inherited through fork, unwind the main process; a worker
    # must just die when the pool terminates it (with a Python-level handler, the pool's
    # terminate() was seen to hang on a worker that never ran it).
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: stop this worker when the main process dies (SIGKILL, OOM killer), instead of leaving
    it blocked on the pool's queue forever."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os._exit(1)


def _convert_batch_worker(batch: list[tuple] | Lines, options: Options) -> list[tuple]:
    """Convert in a worker; the row travels back as its JSON text, cheaper to send and to decode
    than dicts, without its verbatim bytes, which the main process holds (``_parallel``)."""
    out = []
    for r in _converted(batch, options):
        out.append((r.index, r.line, r.format, r.encoded, r.issues, r.repairs, r.rejected))
    return out


def _converted(batch: list[tuple] | Lines, options: Options) -> Iterator[Result]:
    """The results of a batch: ``_portable`` records, or a block of JSONL lines split and parsed here."""
    if isinstance(batch, Lines):
        return (_convert_record(record, options) for record in batch.records())
    return (_convert_portable(item, options) for item in batch)


def _convert_portable(item: tuple, options: Options) -> Result:
    """Convert one ``_portable`` record, parsing its bytes first when it came as JSON text."""
    from glmdata.io import parse_row

    index, line, raw, error, value, from_text = item
    if error is None and from_text:
        value, error = parse_row(raw)
    return _convert_record(Record(index, line, raw, value, error), options)


_HASH_BITS = (1 << 64) - 1


def digest(encoded: bytes | memoryview) -> int:
    """64-bit digest of a converted row's bytes, never 0 (0 marks a free slot in _Seen): Python's
    own keyed SipHash of bytes, five times faster than BLAKE2b. Its key differs from process to
    process, so digests are only ever taken, and compared, in the process that marks duplicates."""
    return (hash(encoded) & _HASH_BITS) or 1


class _Seen:
    """First row index of each distinct converted row, keyed by a 64-bit ``digest`` of its
    bytes, in an open-addressing table of two flat arrays: 32 bytes a row at worst (a dict of
    digests costs about 120), so a million rows stay near 32 MB. A false match (two different rows
    with one digest) has a chance below 1e-7 in a million rows."""

    def __init__(self) -> None:
        self._keys = array("Q", bytes(8 * 1024))
        self._rows = array("q", bytes(8 * 1024))
        self._size = 0

    def first(self, key: int, index: int) -> int:
        """The index of the first row whose bytes have the ``digest`` ``key``, recording ``index``
        if there is none."""
        keys, mask = self._keys, len(self._keys) - 1
        slot = key & mask
        while keys[slot]:
            if keys[slot] == key:
                return self._rows[slot]
            slot = (slot + 1) & mask
        keys[slot] = key
        self._rows[slot] = index
        self._size += 1
        if 2 * self._size > len(keys):
            self._grow()
        return index

    def _grow(self) -> None:
        old = zip(self._keys, self._rows)
        capacity = 2 * len(self._keys)
        self._keys, self._rows = array("Q", bytes(8 * capacity)), array("q", bytes(8 * capacity))
        keys, rows, mask = self._keys, self._rows, capacity - 1
        for key, row in old:
            if key:
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot], rows[slot] = key, row


def _duplicate(first: int) -> Issue:
    return Issue("duplicate", "row", f"exact duplicate of row {first}")


def _with_duplicates(results: Iterator[Result], options: Options) -> Iterator[Result]:
    seen = _Seen()
    for result in results:
        if result.encoded and not result.rejected:
            first = seen.first(digest(result.encoded), result.index)
            if first != result.index:
                result.duplicate_of = first
                if options.dedupe:
                    result.deduplicated = True
                else:
                    result.issues.append(_duplicate(first))
                    result.rejected = options.strict
        yield result


@dataclass(slots=True)
class Chunk:
    """A batch of consecutive rows, converted for commands that write or count rows without
    looking at each (``glmdata convert`` and ``validate``): the kept rows' bytes ready to write,
    the rejected rows in full, and the batch's account. It is built where the rows are converted
    (a worker process, with ``workers`` > 1), so the main process handles batches, not rows."""

    report: Any  #: glmdata.report.Report of the batch, duplicates across the file included
    output: bytes  #: the kept rows, one compact JSON line each, in order
    rejected: list[Result]  #: rejected rows in order, with their bytes and findings (``row`` not kept)
    # per kept row before duplicates are marked: (index, bytes of its line); and, with
    # --strict (where a duplicate is rejected and needs its source), (line, raw)
    kept: list[tuple[int, int]] = field(default_factory=list)
    sources: list[tuple[int | None, bytes]] | None = None


def convert_chunks(path: str | os.PathLike, options: Options = Options(), *, workers: int = 1) -> Iterator[Chunk]:
    """Stream ``path`` as :class:`Chunk` objects of up to ``BATCH`` rows, in order, duplicates
    across the whole file marked. Writing every chunk's ``output`` gives the same bytes, and
    merging every chunk's ``report`` the same account, as :func:`convert_file` with one
    ``Report.add`` per row. Raises :class:`glmdata.io.InputError` like ``convert_file``."""
    batches = _batches(read_blocks(path, BLOCK_BYTES))
    if workers > 1:
        chunks = _in_pool(_chunk, batches, options, workers, path)
    else:
        chunks = ((batch, _chunk(batch, options)) for batch in batches)
    seen = _Seen()
    for batch, chunk in chunks:
        # the main process numbered the rows of every later block from this count
        assert not isinstance(batch, Lines) or chunk.report.rows_in == batch.rows, "rows miscounted in a block"
        _mark_duplicates(chunk, seen, options)
        yield chunk


def _batches(records: Iterable[Record | Lines]) -> Iterator[list[tuple] | Lines]:
    """Consecutive records as ``_portable`` tuples, BATCH at most, or fewer once they hold
    BATCH_BYTES of source; a block of JSONL lines is a batch as it is."""
    batch, size = [], 0
    for record in records:
        if isinstance(record, Lines):
            if batch:
                yield batch
                batch, size = [], 0
            yield record
            continue
        batch.append(_portable(record))
        size += len(record.raw)
        if len(batch) >= BATCH or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _chunk(batch: list[tuple] | Lines, options: Options) -> Chunk:
    """Convert one batch (``_portable`` records, or a block of JSONL lines, split and parsed
    here) into a Chunk; duplicates within the file are marked later, in order, by
    ``_mark_duplicates``."""
    from glmdata.report import Report

    chunk = Chunk(Report(), b"", [], [], [] if options.strict else None)
    lines = []
    for result in _converted(batch, options):
        result.row = None  # travels back without it: the command needs the bytes
        chunk.report.add(result)
        if result.rejected:
            chunk.rejected.append(result)
        else:
            lines.append(result.encoded)
            chunk.kept.append((result.index, len(result.encoded) + 1))
            if chunk.sources is not None:
                chunk.sources.append((result.line, result.raw))
    chunk.output = b"\n".join(lines) + b"\n" if lines else b""
    return chunk


def _mark_duplicates(chunk: Chunk, seen: _Seen, options: Options) -> None:
    """What ``_with_duplicates`` and ``Report.add`` do for a duplicate row, on a chunk: warn, or
    with --dedupe drop it, or with --strict reject it; dropped rows leave ``output``."""
    report, dropped, view, start = chunk.report, [], memoryview(chunk.output), 0
    for position, (index, length) in enumerate(chunk.kept):
        first = seen.first(digest(view[start : start + length - 1]), index)  # the row's bytes, no newline
        start += length
        if first == index:
            continue
        if options.dedupe:  # counted as kept by the chunk: now as Report.add counts a deduplicated row
            report.rows_out -= 1
            report.dropped_duplicate(index)
            dropped.append(position)
            continue
        issue = _duplicate(first)
        report.count(issue, index)
        if options.strict:
            report.rows_out -= 1
            report.rejected += 1
            dropped.append(position)
            line, raw = chunk.sources[position]
            chunk.rejected.append(Result(index, line, raw, issues=[issue], rejected=True, duplicate_of=first))
    if dropped:
        chunk.rejected.sort(key=lambda r: r.index)
        start, parts, gone = 0, [], set(dropped)
        for position, (_, length) in enumerate(chunk.kept):
            if position not in gone:
                parts.append(view[start : start + length])
            start += length
        chunk.output = b"".join(parts)


def convert_batch(batch: dict[str, list], options: Options | None = None, **option_values: Any) -> dict[str, list]:
    """Convert a ``datasets`` batch (column -> values); for ``Dataset.map(batched=True, num_proc=N)``.

    Returns three new columns: ``glm_json`` (the converted row as JSON text, empty when rejected;
    text because Arrow would merge message structs across rows and inject nulls again), ``glm_ok``
    and ``glm_issues`` (JSON list of issues). Duplicates are not detected across batches.
    """
    options = options or Options(**option_values)
    columns = list(batch)
    size = len(batch[columns[0]]) if columns else 0
    out: dict[str, list] = {"glm_json": [], "glm_ok": [], "glm_issues": []}
    for i in range(size):
        row = {column: batch[column][i] for column in columns if not column.startswith("glm_")}
        result = convert_row(row, options, index=i)
        out["glm_json"].append(result.encoded.decode() if result.ok else "")
        out["glm_ok"].append(result.ok)
        out["glm_issues"].append(json_bytes([issue.to_dict() for issue in result.issues]).decode())
    return out
