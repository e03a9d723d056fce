"""What every ``glmdata`` command shares: the app, the errors and exit codes, the common options,
the stderr console, output files, and the conversion loop of ``convert`` and ``validate``.

Exit codes: 0 ok, 1 the data has problems, 2 usage or I/O error, 128 + N when stopped by signal N
(130 Ctrl-C, 143 SIGTERM), 141 when the reader of stdout went away. A user error is one line
saying what and how to fix; ``--debug`` shows the traceback. Text from the data or from file names
is printed literally (never as rich markup).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from enum import Enum
from itertools import chain, islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.markup import escape

from glmdata.repairs import REPAIRS

if TYPE_CHECKING:
    from rich.progress import Progress

    from glmdata.convert import Options
    from glmdata.families import Reasoning
    from glmdata.render import Template, TrainOn
    from glmdata.report import Report
    from glmdata.result import Result

app = typer.Typer(
    name="glmdata",
    help="Prepare chat and tool-call datasets for GLM-4: convert, validate, render, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: a message is one line however long, so that logs and grep see it whole; no emoji codes:
# ":smile:" in a row or a file name is text, as "[bold]" is
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
DEBUG = {"on": False}
#: rejected rows named one by one on stderr; the rest are counted
SHOW_FINDINGS = 10


class UserError(Exception):
    """A usage or I/O problem: printed as one line, exit 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every ``with`` block unwinds: the atomic
    writers remove their temporary files and no partial output is left."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class CallStyle(str, Enum):
    """How a tool call is written in the output rows (see ``--call-style``)."""

    native = "native"
    json = "json"


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    DEBUG["on"] = debug


# ---------------------------------------------------------------------------------- common options

InputArg = Annotated[
    str,
    typer.Argument(help="Dataset file: JSON array, JSONL, .gz of either, Parquet, or - for stdin.", show_default=False),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Force the input format: messages, openai, sharegpt (glaive), chatglm3, alpaca. "
        "Default: detected per row.",
    ),
]
StyleOpt = Annotated[
    CallStyle,
    typer.Option(
        "--call-style",
        help="native: metadata=tool name, content=arguments JSON (what GLM-4 emits); "
        'json: content {"name", "arguments"}.',
    ),
]
NoRepairOpt = Annotated[
    list[str],
    typer.Option(
        "--no-repair",
        help=f"Switch a repair off (repeatable); rows that need it are rejected. Repairs: {', '.join(REPAIRS)}.",
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Treat warnings as errors (reject those rows).")]
DedupeOpt = Annotated[bool, typer.Option("--dedupe", help="Drop exact duplicate rows (counted as deduplicated).")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Also write the summary as JSON to this file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Chat template: a packaged name (glm-4-9b-chat, glm-4-9b-chat-v2, glm-4-0414, glm-4.5, glm-4.6, "
        "NAME.generation), a .jinja file, a tokenizer_config.json or a tokenizer directory. Default: glm-4-9b-chat's.",
    ),
]
ReasoningOpt = Annotated[
    str,
    typer.Option(
        "--reasoning",
        help="Assistant reasoning for a template without a slot for it (all but glm-4.5/4.6): text "
        "(<think>R</think> before the content) or drop (dropped everywhere).",
    ),
]
TrainOnOpt = Annotated[str, typer.Option("--train-on", help="assistant, all or last (see `glmdata render`).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr but errors.")]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        "-j",
        min=1,
        help="Convert in this many processes (this one included); output order and bytes are the same as with one.",
    ),
]


def conversion_options(
    from_format: str | None,
    call_style: CallStyle = CallStyle.native,
    no_repair: list[str] | tuple[str, ...] = (),
    strict: bool = False,
    dedupe: bool = False,
) -> Options:
    """The options of the common flags. :class:`glmdata.convert.Options` validates them (its
    message names the bad value and lists the known ones); here that becomes a usage error."""
    from glmdata.convert import Options

    try:
        return Options(from_format, call_style.value, frozenset(no_repair), strict, dedupe)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def checked_train_on(train_on: str) -> TrainOn:
    """``--train-on``, when it names one of :data:`glmdata.render.TRAIN_ON`."""
    from glmdata.render import TRAIN_ON

    if train_on not in TRAIN_ON:
        raise UserError(f"--train-on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    return cast("TrainOn", train_on)


def checked_reasoning(reasoning: str) -> Reasoning:
    """``--reasoning``, when it names one of :data:`glmdata.families.REASONING`."""
    from glmdata.families import REASONING

    if reasoning not in REASONING:
        raise UserError(f"--reasoning must be one of {', '.join(REASONING)}, not {reasoning!r}")
    return cast("Reasoning", reasoning)


def check_max_length(max_length: int | None) -> None:
    """``--max-length``, when given, is a positive number of tokens."""
    if max_length is not None and max_length <= 0:
        raise UserError("--max-length must be a positive number of tokens")


def chat_template(source: str | None) -> Template:
    """The ``--template`` (default: glm-4-9b-chat's); one that cannot be loaded is a usage error."""
    from glmdata.render import TemplateError, load_template

    try:
        return load_template(source)
    except TemplateError as exc:
        raise UserError(str(exc)) from None


def tokenizer_at(path: str) -> Any:
    """The local tokenizer at ``path`` (``--tokenizer``); one that cannot be loaded is a usage error."""
    from glmdata.tokenizer import TokenizerError, load_tokenizer

    try:
        return load_tokenizer(path)
    except TokenizerError as exc:
        raise UserError(str(exc)) from None


# ---------------------------------------------------------------------------------- errors and exit codes


def run(body: Callable[[], int | None], stdout: bool = False) -> None:
    """Run a command body, turning user errors into one line and the right exit code. Option
    checks that can fail belong inside ``body``, so that they get the same treatment. A command
    that will write to ``stdout`` stops first when stdout is closed, before any work."""
    from glmdata.io import InputError

    try:
        if stdout and _stdout_is_closed():
            raise UserError(STDOUT_CLOSED)
        code = body()
        if sys.stdout is not None:
            sys.stdout.flush()  # here, not at exit, so that a stdout that cannot be written is an error
    except (UserError, InputError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        if DEBUG["on"]:
            err.print_exception()
        raise typer.Exit(2) from None
    except BrokenPipeError:
        # whoever read stdout went away (`glmdata render --all | head`): stop quietly, like cat
        _silence_stdout()
        raise typer.Exit(128 + 13) from None  # 13: SIGPIPE
    except OSError as exc:
        if stdout_closed(exc):
            raise typer.Exit(2) from None
        where = f"{exc.filename}: " if exc.filename else ""
        fix = "; free some space or write elsewhere" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        err.print(f"[red]error:[/] {escape(where + (exc.strerror or str(exc)))}{fix} (no output file was written)")
        if DEBUG["on"]:
            err.print_exception()
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        err.print(f"[red]interrupted[/] ({signal.Signals(signum).name}): no output file was written")
        raise typer.Exit(128 + signum) from None
    raise typer.Exit(code or 0)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests' runner)
        pass


STDOUT_CLOSED = "stdout is closed, so the output has nowhere to go; redirect it (> FILE, | less)"


def _stdout_is_closed() -> bool:
    """Closed (``>&-``, which :func:`open_std_streams` reopens read-only) or open only for reading."""
    import fcntl

    if sys.stdout is None:
        return True
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file descriptor (tests' runner)
        return False
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except OSError:
        return True


def stdout_closed(exc: OSError) -> bool:
    """Is ``exc`` the failure to write to a closed stdout? If so, say so in one line."""
    if exc.errno != errno.EBADF or exc.filename or not _stdout_is_closed():
        return False
    _silence_stdout()
    err.print(f"[red]error:[/] {STDOUT_CLOSED}")
    return True


def open_std_streams() -> None:
    """A stdin or stdout the caller closed (``<&-``, ``>&-``) is opened on /dev/null the wrong way
    round, so that reading or writing it fails (EBADF) into a one-line error instead of Python's
    ``None`` stream, and no file opened later takes its descriptor (and its prints)."""
    for fd, mode, name in ((0, os.O_WRONLY, "stdin"), (1, os.O_RDONLY, "stdout")):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, mode)  # takes the lowest free descriptor: ``fd``
            setattr(sys, name, open(fd, "w" if fd else "r", encoding="utf-8", closefd=False))  # noqa: SIM115


_MAIN_PID = {"pid": -1}


def _on_signal(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one stops the process at once
    if os.getpid() != _MAIN_PID["pid"]:  # a forked worker (--workers) inherited the handler: just stop
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM (kill, timeouts, job schedulers) and SIGHUP (closed terminal) unwind like Ctrl-C.
    Signals that are ignored (nohup) stay ignored."""
    _MAIN_PID["pid"] = os.getpid()
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not the main thread
            pass


# ---------------------------------------------------------------------------------- output files


def check_paths(input: str, *outputs: str | os.PathLike | None) -> None:
    """Refuse, before anything is read or written, an output that is the input or another output,
    and an output that cannot be written. ``None`` and ``-`` (stdout) are skipped."""
    paths = [str(p) for p in outputs if p is not None and str(p) != "-"]
    for i, path in enumerate(paths):
        if input != "-" and _same_file(path, input):
            raise UserError(f"output {path} is the input file; write to another path (the input is never modified)")
        if any(_same_file(path, other) for other in paths[:i]):
            raise UserError(f"{path} is given for two outputs; give each its own path")
        target = Path(path)
        if target.is_dir():
            raise UserError(f"{path} is a directory; give the output a file name")
        parent = target.parent
        if not parent.exists():
            raise UserError(f"{path}: directory {parent} does not exist")
        if not parent.is_dir():
            raise UserError(f"{path}: {parent} is not a directory")
        if not os.access(parent, os.W_OK):
            raise UserError(f"{path}: directory {parent} is not writable")


def _same_file(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.samefile(pb)  # also through symlinks and hard links
        return pa.resolve() == pb.resolve()
    except (OSError, RuntimeError):
        return False


class LineWriter:
    """Writes lines to a binary stream in blocks of about ``BLOCK`` bytes: one ``write`` per block,
    not per row. A failing write names the file (``write`` failing with ENOSPC names none)."""

    BLOCK = 1 << 16  # small: from a slow pipe, rows still reach the file while more input is awaited

    def __init__(self, stream: IO[bytes], name: str | None):
        self.stream, self.name = stream, name
        self.lines: list[bytes] = []
        self.size = 0

    def write_line(self, data: bytes) -> None:
        """Write ``data`` and a newline."""
        self.lines.append(data)
        self.size += len(data)
        if self.size >= self.BLOCK:
            self.flush()

    def write(self, data: bytes) -> None:
        """Write ``data`` as it is."""
        self.flush()
        self._write(data)

    def flush(self) -> None:
        """Hand the lines held here to the stream."""
        if self.lines:
            self.lines.append(b"")  # the last line's newline
            block = b"\n".join(self.lines)
            self.lines.clear()
            self.size = 0
            self._write(block)

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except OSError as exc:
            raise _named(exc, self.name) from None


def _named(exc: OSError, name: str | None) -> OSError:
    return exc if exc.filename or name is None else OSError(exc.errno, exc.strerror or str(exc), name)


@contextmanager
def output(path: str | os.PathLike) -> Iterator[LineWriter]:
    """An atomic writer (:func:`glmdata.io.atomic_writer`: the file appears only when the block
    succeeds; ``-`` is stdout) whose I/O errors, from writing to the final sync, name the file."""
    from glmdata.io import atomic_writer

    name = None if str(path) == "-" else str(path)
    failed_inside = False
    try:
        with atomic_writer(path) as stream:
            writer = LineWriter(stream, name)
            try:
                yield writer
                writer.flush()
            except BaseException:
                failed_inside = True
                raise
    except OSError as exc:
        if failed_inside or name is None:
            raise
        raise _named(exc, name) from None


def print_json(value: Any) -> None:
    """``value`` on stdout as indented JSON (``--json``)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


# ---------------------------------------------------------------------------------- converting (convert, validate)


def progress(enabled: bool) -> Progress:
    """A row counter on stderr, shown only when ``enabled`` (a terminal, not --quiet)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.completed:,} rows"), TimeElapsedColumn())
    return Progress(*columns, console=err, transient=True, disable=not enabled)


def converted(input: str, options: Options, workers: int, bar: Progress, what: str) -> Generator[Result, None, None]:
    """:func:`glmdata.convert.convert_file`'s results (rows as their JSON bytes only), counted on
    ``bar``. A file that is one JSON value written over several lines, neither JSONL nor a JSON
    array, is a usage error rather than a rejected row per line. Close the generator when done
    (``contextlib.closing``): that drops ``convert_file``'s generator, which stops its workers."""
    from glmdata.convert import convert_file

    task = bar.add_task(what, total=None)
    results = convert_file(input, options, workers=workers, decode=False)
    first = list(islice(results, 2))
    if _one_object_over_lines(first):
        raise UserError(
            f"{input} holds a JSON object written over several lines, which is neither JSONL nor a JSON array; "
            f"wrap it in [ ] (a JSON array of rows), or write one object per line (jq -c . {input} > rows.jsonl)"
        )
    for count, result in enumerate(chain(first, results), 1):
        if count % 1024 == 0:  # a progress update per row would cost more than a row's conversion
            bar.update(task, completed=count)
        yield result


def _one_object_over_lines(first: list[Result]) -> bool:
    """Rows 0 and 1 are lines that are not JSON, the first one the start of an object that its line
    cuts short (``{`` or ``{"rows": [``), as a pretty-printed object's first lines are."""
    return (
        [r.index for r in first] == [0, 1]
        and all(r.rejected and any(i.code == "invalid-json" for i in r.issues) for r in first)
        and _object_cut_short(first[0].raw)
    )


def _object_cut_short(raw: bytes) -> bool:
    from glmdata.jsontext import JSONDecodeError, loads

    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return False
    try:
        loads(text)
    except JSONDecodeError as exc:
        return exc.pos >= len(text)
    except RecursionError:
        return False
    return False


def print_findings(source: str, findings: list[Result], total: int) -> None:
    """One line per finding of the first rejected rows, ``FILE:LINE row N PATH: message (code; fix: ...)``;
    the other ``total - len(findings)`` rejected rows counted."""
    for result in findings:
        line = f":{result.line}" if result.line is not None else ""
        where = escape(f"{source}{line} row {result.index}")
        for issue in result.errors or result.issues:
            text = escape(f"{issue.path}: {issue.message}")
            err.print(f"[red]{where}[/] {text} [dim]({issue.code}; fix: {escape(issue.hint)})[/]")
    if total > len(findings):
        more = total - len(findings)
        err.print(f"[dim]... and {more} more rejected rows (see the rejects file or --report)[/]")


def finish(report: Report, report_path: Path | None, as_json: bool, quiet: bool) -> int:
    """Write the report where asked, print it, and give the exit code: 1 when rows were rejected
    or there were none."""
    if report_path is not None:
        with output(report_path) as out:
            out.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2).encode() + b"\n")
    if as_json:
        print_json(report.to_dict())
    if not quiet:
        report.print(err)
    if report.rows_in == 0:
        err.print(
            f"[red]{escape(str(report.source))}: no rows found[/] (the file is empty, blank, or an empty JSON array)"
        )
        return 1
    return 1 if report.rejected else 0
