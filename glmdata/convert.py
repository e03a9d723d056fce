"""The data path: any supported row -> repaired, checked GLM-4 messages row, or a rejection.

``convert_row`` handles one parsed row; ``convert_file`` streams a file (the one path the commands
use, in one process or several) and adds what needs the whole file (duplicates);
``convert_batch`` runs inside ``datasets.Dataset.map(batched=True, num_proc=N)`` for corpora beyond
one machine's files. Every row in comes out as exactly one :class:`Result`: kept, rejected, or
dropped as a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import re
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from glmdata import formats
from glmdata.builder import MessagesBuilder
from glmdata.checks import check_row
from glmdata.io import Lines, Record, parse_row, read_blocks, read_records
from glmdata.issues import Issue, RowError
from glmdata.jsontext import compact
from glmdata.models import MessagesRow
from glmdata.repairs import REPAIRS, Fixer, strip_nulls
from glmdata.result import Result

CallStyle = Literal["native", "json"]
ReasoningPolicy = Literal["text", "drop", "reject"]
REASONING_POLICIES: tuple[str, ...] = ("text", "drop", "reject")


@dataclass(frozen=True)
class Options:
    """How to convert, validated once, here. ``disabled_repairs`` are names from
    :data:`glmdata.repairs.REPAIRS`; ``from_format`` a format name or alias (None: detected per row).
    Raises ``ValueError`` naming the bad value and the known ones."""

    from_format: str | None = None
    call_style: CallStyle = "native"
    disabled_repairs: frozenset[str] = frozenset()
    strict: bool = False
    dedupe: bool = False
    #: a template family (``glmdata.families.FAMILIES``): rows are written in the shape its template
    #: reads (``template_input``); None: the internal rows as they are
    template: str | None = None
    #: reasoning for a family with no slot for it: kept as text, dropped, or the row rejected
    reasoning: ReasoningPolicy = "text"

    def __post_init__(self) -> None:
        if self.call_style not in ("native", "json"):
            raise ValueError(f"call_style must be 'native' or 'json', not {self.call_style!r}")
        if self.reasoning not in REASONING_POLICIES:
            raise ValueError(f"reasoning must be one of {', '.join(REASONING_POLICIES)}, not {self.reasoning!r}")
        if self.template is not None:
            from glmdata.families import FAMILIES, family_of

            family = family_of(self.template)
            if family is None:
                raise ValueError(f"unknown template family {self.template!r}; known: {', '.join(FAMILIES)}")
            object.__setattr__(self, "template", family.name)
        unknown = sorted(set(self.disabled_repairs) - set(REPAIRS))
        if unknown:
            raise ValueError(f"unknown repair {', '.join(unknown)}; known repairs: {', '.join(REPAIRS)}")
        if self.from_format is not None:
            try:
                object.__setattr__(self, "from_format", formats.resolve(self.from_format))
            except KeyError:
                known = ", ".join(formats.format_names())
                aliases = ", ".join(formats.ALIASES)
                raise ValueError(
                    f"unknown format {self.from_format!r}; known formats: {known} (aliases: {aliases})"
                ) from None


def convert_row(
    value: Any, options: Options = Options(), *, index: int = 0, line: int | None = None, raw: bytes | None = None
) -> Result:
    """Convert one parsed row. Never raises for bad data: problems are in ``result.issues``.

    With ``options.template``, a kept row's ``result.encoded`` (what is written) is in the shape
    that family's template reads, and ``result.row`` stays the internal row."""
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
            result.issues.extend(check_row(row, builder.calls))
    except RowError as exc:
        result.issues.extend(exc.issues)
    except RecursionError:
        result.issues.append(Issue("schema", "row", "nested too deeply to be a chat row"))
    result.repairs = fx.applied
    result.rejected = result.row is None or (
        bool(result.issues) and (options.strict or any(i.severity == "error" for i in result.issues))
    )
    if not result.rejected and (options.template is not None or _has_reasoning(result.row)):
        from glmdata.families import DEFAULT_FAMILY, FAMILIES

        # without --template the output is glm-4-9b-chat's shape: reasoning goes as --reasoning says
        family = FAMILIES[options.template] if options.template is not None else DEFAULT_FAMILY
        shape_for_template(result, family, options)
    return result


def _has_reasoning(row: MessagesRow | None) -> bool:
    return row is not None and any("reasoning" in message for message in row["messages"])


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encode(row: MessagesRow) -> bytes:
    """The row as compact JSON (what is written, and hashed for duplicates), serialized once.

    Rejects a row that no UTF-8 file can hold: JSON text inside a row (a tools string, call
    arguments) may escape half a surrogate pair, ``"\\ud800"``, which parses to no character."""
    try:
        return orjson.dumps(row)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, or an integer beyond 64 bits
        found = _find_surrogate(row, "")
        if found is not None:
            path, char = found
            raise RowError(
                Issue(
                    "invalid-json",
                    path or "row",
                    f"the escape \\u{ord(char):04x} is half a surrogate pair, not a character; no UTF-8 file can hold it",
                )
            ) from None
        return compact(row)


def _find_surrogate(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        char = _SURROGATE.search(value)
        return (path, char.group()) if char else None
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
    return _with_duplicates(_keyed(convert_row(value, options, index=i) for i, value in enumerate(rows)), options)


def convert_records(records: Iterable[Record], options: Options = Options()) -> Iterator[Result]:
    """Convert rows read by :func:`glmdata.io.read_records`, keeping their positions and bytes."""
    return _with_duplicates(_keyed(_convert_record(record, options) for record in records), options)


def shape_for_template(result: Result, family: Any, options: Options) -> Result:
    """Rewrite a kept ``result``'s bytes as ``family``'s template input (``glmdata.families.
    template_input``). For a family with no reasoning slot, each assistant reasoning is written
    into the content (repair ``reasoning-as-text``), dropped (``reasoning-dropped``), or rejects
    the row (``reasoning-without-slot``), as ``options.reasoning`` says."""
    from glmdata.families import template_input

    if result.rejected or result.row is None:
        return result
    row = result.row
    if not family.reasoning:
        reasoned = [i for i, message in enumerate(row["messages"]) if "reasoning" in message]
        if reasoned and not _reasoning_policy(result, family, reasoned, options):
            return result
    try:
        shaped = template_input(row, family, reasoning="drop" if options.reasoning == "drop" else "text")
        result.encoded = _encode(shaped)  # type: ignore[arg-type] # a template's input, not a MessagesRow
    except (ValueError, RowError) as exc:  # the checks reject what either raises: not expected on kept rows
        issues = exc.issues if isinstance(exc, RowError) else [Issue("arguments-not-object", "messages", str(exc))]
        result.issues.extend(issues)
        result.rejected = True
    return result


def _reasoning_policy(result: Result, family: Any, reasoned: list[int], options: Options) -> bool:
    """Apply ``--reasoning`` to a row whose messages ``reasoned`` have reasoning; False when that
    rejects the row."""
    if options.reasoning == "reject":
        for i in reasoned:
            result.issues.append(
                Issue(
                    "reasoning-without-slot",
                    f"messages[{i}].reasoning",
                    f"the {family.name} template has no slot for reasoning (--reasoning reject)",
                )
            )
        result.rejected = True
        return False
    name = "reasoning-as-text" if options.reasoning == "text" else "reasoning-dropped"
    if name in options.disabled_repairs:
        where = f"messages[{reasoned[0]}].reasoning"
        what = f"reasoning for the {family.name} template, which has no slot for it; the {name} repair is switched off"
        result.issues.append(Issue("disabled-repair", where, what))
        result.rejected = True
        return False
    result.repairs.extend((name, f"messages[{i}].reasoning") for i in reasoned)
    return True


def _convert_record(record: Record, options: Options) -> Result:
    if record.error is not None:
        return Result(record.index, record.line, record.raw, issues=[record.error], rejected=True)
    return convert_row(record.value, options, index=record.index, line=record.line, raw=record.raw)


def convert_file(
    path: str | os.PathLike, options: Options = Options(), *, workers: int = 1, decode: bool = True
) -> Iterator[Result]:
    """Stream ``path`` (any supported format, ``"-"`` for stdin) into one Result per row, in order.

    ``workers`` > 1 converts in that many worker processes, batches of rows in order; the results
    and the bytes written are the same as with one. ``decode=False`` (with workers) leaves
    ``result.row`` None and only ``result.encoded`` set, sparing the decoding when only the bytes
    are needed (with ``options.template`` always: the bytes are the template's input, not a
    row). Raises :class:`glmdata.io.InputError` when the file cannot be opened at all.
    """
    if workers <= 1:
        return convert_records(read_records(path), options)
    return _with_duplicates(_in_workers(path, options, workers, decode and options.template is None), options)


# A batch for a worker: a block of whole JSONL lines of about BLOCK_BYTES, or up to BATCH rows of
# another layout; at most AHEAD batches per worker are in flight, so memory stays bounded.
BLOCK_BYTES = 1 << 19
BATCH = 512
AHEAD = 3


def _in_workers(path: str | os.PathLike, options: Options, workers: int, decode: bool) -> Iterator[tuple[Result, int]]:
    """The results of ``path``'s rows converted by a pool of ``workers`` processes, in order.

    The batches are read in a thread, so that results that are done are handed on while the next
    input is awaited (from a pipe, rows flow as they come)."""
    from concurrent.futures import ProcessPoolExecutor, wait

    batches = _batches(read_blocks(path, BLOCK_BYTES))
    first = next(batches, None)
    if first is None:
        return
    pool = ProcessPoolExecutor(workers, initializer=_worker_started, initargs=(os.getpid(),))
    # the first submit forks every worker, before the reading thread exists: a fork while it
    # sits in a read of stdin would leave the workers holding stdin's lock
    pending = deque([(first, pool.submit(_convert_batch, first, options))])
    incoming = _ReadAhead(batches)
    try:
        while pending or not incoming.done:
            # hand on what is done; wait for the oldest when enough are in flight or the input is over
            while pending and (pending[0][1].done() or len(pending) >= AHEAD * workers or incoming.done):
                batch, future = pending.popleft()
                yield from _results(batch, future.result(), decode)
            batch = incoming.next(wait=not pending)
            if batch is not None:
                pending.append((batch, pool.submit(_convert_batch, batch, options)))
            elif pending:
                wait([pending[0][1]], timeout=0.005)
    finally:
        incoming.close()
        pool.shutdown(wait=True, cancel_futures=True)


class _ReadAhead:
    """The next few items of an iterator, read in a thread; ``next(wait=False)`` gives None when
    none is there yet, and an exception in the reading is raised here."""

    _END = object()

    def __init__(self, items: Iterator[Any], depth: int = 2):
        import queue
        import threading

        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._stop = threading.Event()
        self.done = False
        threading.Thread(target=self._read, args=(items,), daemon=True, name="glmdata-reader").start()

    def _read(self, items: Iterator[Any]) -> None:
        import queue

        try:
            for item in items:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._END)
        except BaseException as exc:
            self._queue.put(exc)

    def next(self, wait: bool) -> Any:
        import queue

        if self.done:
            return None
        try:
            item = self._queue.get(timeout=None if wait else 0.002)
        except queue.Empty:
            return None
        if item is self._END or isinstance(item, BaseException):
            self.done = True
            if isinstance(item, BaseException):
                raise item
            return None
        return item

    def close(self) -> None:
        self._stop.set()


def _batches(items: Iterable[Lines | Record]) -> Iterator[Lines | list[Record]]:
    """Blocks of JSONL lines as they are; other records in lists of up to BATCH."""
    batch: list[Record] = []
    for item in items:
        if isinstance(item, Lines):
            yield item
            continue
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _records(batch: Lines | list[Record]) -> Iterable[Record]:
    return batch.records(parse=False) if isinstance(batch, Lines) else batch


def _convert_batch(batch: Lines | list[Record], options: Options) -> tuple[bytes, bytes]:
    """In a worker: convert a batch. What travels back is two byte strings, far cheaper to send
    than Result objects: the rows' JSON text, one after another, and an account of each (format,
    length of its text, rejected, findings, repairs) as JSON. Positions and source bytes stay in
    the main process, which holds the batch."""
    texts, account = [], []
    for record in _records(batch):
        if record.error is None and record.from_text:  # read unparsed: parsed here, once
            record.value, record.error = parse_row(record.raw)
        result = _convert_record(record, options)
        texts.append(result.encoded)
        issues = [(i.code, i.path, i.message) for i in result.issues]
        key = _key(result)
        account.append((result.format, len(result.encoded), result.rejected, issues, result.repairs, key))
    return b"".join(texts), orjson.dumps(account)


def _results(batch: Lines | list[Record], converted: tuple[bytes, bytes], decode: bool) -> Iterator[tuple[Result, int]]:
    """The Results of a batch, with their digests, from what ``_convert_batch`` sent back."""
    texts, account = converted
    start = 0
    for record, (fmt, size, rejected, issues, repairs, key) in zip(_records(batch), orjson.loads(account), strict=True):
        encoded = texts[start : start + size]
        start += size
        result = Result(record.index, record.line, record.raw, fmt, None, encoded,
                        [Issue(*issue) for issue in issues], [tuple(repair) for repair in repairs], rejected)  # fmt: skip
        if decode and encoded:
            result.row = orjson.loads(encoded)
        yield result, key


def _worker_started(parent: int) -> None:
    """In each worker: leave Ctrl-C to the main process (it stops the pool), die on SIGTERM/SIGHUP
    without the CLI's handlers inherited through fork, and exit when the main process is gone
    (killed with SIGKILL, it cannot stop the pool)."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True, name="glmdata-orphan-watch").start()


def digest(encoded: bytes) -> int:
    """64-bit digest of a converted row's bytes (BLAKE2b), never 0 (0 marks a free slot in _Seen):
    the same for the same bytes in every process and every run."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little") or 1


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
        """The index of the first row whose digest is ``key``, recording ``index`` if there is none."""
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


def _key(result: Result) -> int:
    """The digest by which a kept row is compared with earlier ones (0: a rejected row, not compared)."""
    return digest(result.encoded) if result.encoded and not result.rejected else 0


def _keyed(results: Iterable[Result]) -> Iterator[tuple[Result, int]]:
    return ((result, _key(result)) for result in results)


def _with_duplicates(results: Iterator[tuple[Result, int]], options: Options) -> Iterator[Result]:
    """Mark exact duplicates (same converted bytes) of an earlier kept row, in this process; the
    digests come with the results (from the workers, which have the bytes at hand)."""
    seen = _Seen()
    for result, key in results:
        if key:
            first = seen.first(key, result.index)
            if first != result.index:
                result.duplicate_of = first
                if options.dedupe:
                    result.deduplicated = True
                else:
                    result.issues.append(Issue("duplicate", "row", f"exact duplicate of row {first}"))
                    result.rejected = options.strict
        yield result


def convert_batch(batch: dict[str, list], options: Options | None = None, **option_values: Any) -> dict[str, list]:
    """Convert a ``datasets`` batch (column -> values); for ``Dataset.map(batched=True, num_proc=N)``.

    Returns three new columns: ``glm_json`` (the converted row as JSON text, in ``options.template``'s
    shape when given, empty when rejected;
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
        out["glm_issues"].append(compact([issue.to_dict() for issue in result.issues]).decode())
    return out
