"""The ``glmdata`` command. Data goes to stdout, people read stderr.

Exit codes: 0 ok, 1 the data has problems, 2 usage or I/O error, 128 + N when stopped by signal N
(130 Ctrl-C, 143 SIGTERM). A user error is one line saying what and how to fix; ``--debug`` shows
the traceback. Text from the data or from file names is printed literally (never as rich markup).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from contextlib import ExitStack, contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from glmdata.repairs import REPAIRS

app = typer.Typer(
    name="glmdata",
    help="Prepare chat and tool-call datasets for GLM-4: convert, validate, render, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: a message is one line however long, so that logs and grep see it whole
err = Console(stderr=True, highlight=False, soft_wrap=True)
DEBUG = {"on": False}
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
    native = "native"
    json = "json"


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    DEBUG["on"] = debug


# ---------------------------------------------------------------------------------- shared options

InputArg = Annotated[str, typer.Argument(help="Dataset file: JSON array, JSONL, .gz of either, Parquet, or - for stdin.", show_default=False)]
FromOpt = Annotated[Optional[str], typer.Option("--from", help="Force the input format: messages, openai, sharegpt (glaive), chatglm3, alpaca. Default: detected per row.")]
StyleOpt = Annotated[CallStyle, typer.Option("--call-style", help="native: metadata=tool name, content=arguments JSON (what GLM-4 emits); json: content {\"name\", \"arguments\"}.")]
NoRepairOpt = Annotated[list[str], typer.Option("--no-repair", help=f"Switch a repair off (repeatable); rows that need it are rejected. Repairs: {', '.join(REPAIRS)}.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Treat warnings as errors (reject those rows).")]
DedupeOpt = Annotated[bool, typer.Option("--dedupe", help="Drop exact duplicate rows (counted as deduplicated).")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Also write the summary as JSON to this file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr but errors.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Convert in this many processes (this one included); output order and bytes are the same as with one.")]


def _options(from_format: str | None, call_style: CallStyle, no_repair: list[str], strict: bool, dedupe: bool):
    from glmdata import formats
    from glmdata.convert import Options

    unknown = [name for name in no_repair if name not in REPAIRS]
    if unknown:
        raise UserError(f"unknown repair {', '.join(unknown)}; known repairs: {', '.join(REPAIRS)}")
    if from_format is not None:
        try:
            formats.resolve(from_format)
        except KeyError:
            raise UserError(f"unknown format {from_format!r}; known formats: {', '.join(formats.format_names())} (aliases: {', '.join(formats.ALIASES)})") from None
    return Options(from_format, call_style.value, frozenset(no_repair), strict, dedupe)


def _progress(enabled: bool):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.completed:,} rows"), TimeElapsedColumn(), console=err, transient=True, disable=not enabled)


def _where(source: str, result) -> str:
    line = f":{result.line}" if result.line is not None else ""
    return f"{source}{line} row {result.index}"


def _print_findings(source: str, findings: list, total: int) -> None:
    for result in findings:
        for issue in result.errors or result.issues:
            err.print(f"[red]{escape(_where(source, result))}[/] {escape(f'{issue.path}: {issue.message}')} [dim]({issue.code}; fix: {escape(issue.hint)})[/]")
    if total > len(findings):
        err.print(f"[dim]... and {total - len(findings)} more rejected rows (see the rejects file or --report)[/]")


def _finish(report, report_path: Path | None, as_json: bool, quiet: bool) -> int:
    if report_path is not None:
        from glmdata.io import atomic_writer

        with atomic_writer(report_path) as out:
            out.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2).encode() + b"\n")
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n")
    if not quiet:
        report.print(err)
    if report.rows_in == 0:
        err.print(f"[red]{escape(str(report.source))}: no rows found[/] (the file is empty, blank, or an empty JSON array)")
        return 1
    return 1 if report.rejected else 0


def _run(body) -> None:
    """Run a command body (a no-argument callable), turning user errors into one line and the
    right exit code. Option parsing that can fail belongs inside ``body``."""
    from glmdata.io import InputError

    try:
        code = body()
    except (UserError, InputError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        if DEBUG["on"]:
            err.print_exception()
        raise typer.Exit(2) from None
    except BrokenPipeError:
        # whoever read stdout went away (`glmdata render --all | head`): stop quietly, like cat
        _silence_stdout()
        raise typer.Exit(128 + 13) from None
    except OSError as exc:
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


_MAIN_PID = {"pid": None}


def _on_signal(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one stops the process at once
    if os.getpid() != _MAIN_PID["pid"]:  # a forked worker (--workers) inherited the handler: just stop
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def _install_signal_handlers() -> None:
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


# ---------------------------------------------------------------------------------- convert

@app.command()
def convert(
    input: InputArg,
    output: Annotated[str, typer.Option("--output", "-o", help="Output JSONL of GLM-4 messages rows (- for stdout).")] = "messages.jsonl",
    from_format: FromOpt = None,
    call_style: StyleOpt = CallStyle.native,
    no_repair: NoRepairOpt = [],  # noqa: B006 - typer reads the default
    strict: StrictOpt = False,
    dedupe: DedupeOpt = False,
    rejects: Annotated[Optional[str], typer.Option("--rejects", help="Where rejected rows go, verbatim with index and reasons (always written when given). Default: OUTPUT with .rejects.jsonl, written only when rows are rejected (a stale one is removed); with -o - none unless given.")] = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
) -> None:
    """Convert a dataset to GLM-4 messages JSONL, repairing what can be repaired and rejecting the rest."""
    _run(lambda: _convert(input, output, _options(from_format, call_style, no_repair, strict, dedupe), rejects, report, as_json, quiet, workers))


def _rejects_path(output: str) -> str | None:
    """The default rejects file: beside the output; none when the output is stdout."""
    if output == "-":
        return None
    base = output[:-6] if output.endswith(".jsonl") else output
    return f"{base}.rejects.jsonl"


def _same_file(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return pa.samefile(pb)  # also through symlinks and hard links
        return pa.resolve() == pb.resolve()
    except (OSError, RuntimeError):
        return False


def _check_paths(input: str, *outputs: str | os.PathLike | None) -> None:
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


class _Named:
    """A binary writer whose errors name its file (``write`` failing with ENOSPC names none)."""

    __slots__ = ("stream", "name")

    def __init__(self, stream, name: str):
        self.stream, self.name = stream, name

    def write(self, data: bytes) -> int:
        try:
            return self.stream.write(data)
        except OSError as exc:
            raise _named(exc, self.name) from None


def _named(exc: OSError, name: str) -> OSError:
    return exc if exc.filename else OSError(exc.errno, exc.strerror or str(exc), name)


@contextmanager
def _output(path: str):
    """``atomic_writer`` whose I/O errors (write, flush, fsync) name the file."""
    from glmdata.io import atomic_writer

    failed_inside = False
    try:
        with atomic_writer(path) as out:
            try:
                yield out if path == "-" else _Named(out, path)
            except BaseException:
                failed_inside = True
                raise
    except OSError as exc:
        if failed_inside or path == "-":
            raise
        raise _named(exc, path) from None


class _Discard(Exception):
    """Raised inside the writers' block to drop what they wrote."""


def _is_json_error(result) -> bool:
    return result.rejected and any(issue.code == "invalid-json" for issue in result.issues)


def _object_cut_short(raw: bytes) -> bool:
    """Whether ``raw`` is the beginning of a JSON object that its line cut short, as the first line
    of a pretty-printed object is (``{`` or ``{"rows": [``)."""
    text = raw.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(text)
    except RecursionError:
        return False
    return False


def _layout_checked(chunks, source: str):
    """Pass chunks through, but stop with a usage error when the file is one JSON value written
    over several lines: neither JSONL nor a JSON array, so every line would be a rejected row."""
    chunks = iter(chunks)
    first = next(chunks, None)
    if first is None:
        return
    first_two = first.rejected[:2]  # rows 0 and 1 are in the first chunk
    if [r.index for r in first_two] == [0, 1] and all(map(_is_json_error, first_two)) and _object_cut_short(first_two[0].raw):
        raise UserError(
            f"{source} holds a JSON object written over several lines, which is neither JSONL nor a JSON array; "
            f"wrap it in [ ] (a JSON array of rows), or write one object per line (jq -c . {source} > rows.jsonl)"
        )
    yield first
    yield from chunks


def _convert(input: str, output: str, options, rejects: str | None, report_path: Path | None, as_json: bool, quiet: bool, workers: int = 1) -> int:
    """Rejects go to ``rejects`` when given (always written, empty when nothing is rejected);
    by default beside the output, written only when a row is rejected, a stale one from an earlier
    run removed; with ``-o -`` and no ``--rejects``, to no file (stderr says so). An input with no
    rows writes nothing."""
    from glmdata.convert import convert_chunks
    from glmdata.io import dump_row
    from glmdata.report import Report

    named_rejects = rejects is not None
    rejects = rejects if named_rejects else _rejects_path(output)
    _check_paths(input, output, rejects, report_path)
    if as_json and output == "-":
        raise UserError("--json prints the report on stdout, which -o - already uses for data; use --report FILE")
    report = Report(input)
    findings = []
    try:
        with ExitStack() as stack:
            out = stack.enter_context(_output(output))
            bad = stack.enter_context(_output(rejects)) if named_rejects and rejects != "-" else None
            progress = stack.enter_context(_progress(err.is_terminal and not quiet))
            task = progress.add_task("converting", total=None)
            for chunk in _layout_checked(convert_chunks(input, options, workers=workers), input):
                report.merge(chunk.report)
                if chunk.output:
                    out.write(chunk.output)
                for result in chunk.rejected:
                    if rejects is not None:
                        if bad is None:  # opened at the first rejected row
                            bad = stack.enter_context(_output(rejects))
                        bad.write(dump_row(result.reject_record(input)))
                    if len(findings) < SHOW_FINDINGS:
                        findings.append(result)
                progress.update(task, completed=report.rows_in)
            if report.rows_in == 0:
                raise _Discard  # nothing to write: leave no empty file, and an old one as it was
    except _Discard:
        pass
    assert report.balanced
    stale = None
    if not named_rejects and rejects is not None and not report.rejected and report.rows_in and os.path.isfile(rejects):
        os.unlink(rejects)  # from an earlier run: it does not belong with this output
        stale = rejects
    if not quiet:
        _print_findings(input, findings, report.rejected)
    code = _finish(report, report_path, as_json, quiet)
    if not quiet and report.rows_in:
        where = "stdout" if output == "-" else output
        if report.rejected and rejects is None:
            kept = f"; {report.rejected:,} rejected rows were not saved (the data went to stdout): pass --rejects FILE to keep them"
        elif report.rejected or named_rejects:
            kept = f", {report.rejected:,} rejected rows to {rejects}"
        else:
            kept = f" (no rejected rows; removed the stale {stale})" if stale else ""
        err.print(escape(f"wrote {report.rows_out:,} rows to {where}{kept}"))
    return code


# ---------------------------------------------------------------------------------- validate

@app.command()
def validate(
    input: InputArg,
    from_format: FromOpt = None,
    call_style: StyleOpt = CallStyle.native,
    no_repair: NoRepairOpt = [],  # noqa: B006
    strict: StrictOpt = False,
    dedupe: DedupeOpt = False,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
) -> None:
    """Run every repair and check on a dataset and report; nothing is written. Exit 1 if rows would be rejected."""
    _run(lambda: _validate(input, _options(from_format, call_style, no_repair, strict, dedupe), report, as_json, quiet, workers))


def _validate(input: str, options, report_path: Path | None, as_json: bool, quiet: bool, workers: int = 1) -> int:
    from glmdata.convert import convert_chunks
    from glmdata.report import Report

    report = Report(input)
    findings = []
    with _progress(err.is_terminal and not quiet) as progress:
        task = progress.add_task("validating", total=None)
        for chunk in _layout_checked(convert_chunks(input, options, workers=workers), input):
            report.merge(chunk.report)
            findings.extend(chunk.rejected[: SHOW_FINDINGS - len(findings)])
            progress.update(task, completed=report.rows_in)
    if not quiet:
        _print_findings(input, findings, report.rejected)
    return _finish(report, report_path, as_json, quiet)


# ---------------------------------------------------------------------------------- schema

@app.command()
def schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the .schema.json files.")] = Path("schemas"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if the files are stale.")] = False,
) -> None:
    """Write the JSON Schema of every supported format (from the Pydantic models)."""
    _run(lambda: _schema(output, check))


def _schema(output: Path, check: bool) -> int:
    from glmdata.io import atomic_writer
    from glmdata.schema import schema_texts, stale_files

    if check:
        stale = stale_files(output)
        for name in stale:
            err.print(f"[red]stale:[/] {escape(str(output / name))} (run `glmdata schema`)")
        return 1 if stale else 0
    output.mkdir(parents=True, exist_ok=True)
    for name, text in schema_texts().items():
        with atomic_writer(output / name) as out:
            out.write(text.encode())
        err.print(escape(f"wrote {output / name}"))
    return 0


def main() -> None:
    """Console-script entry point."""
    _install_signal_handlers()
    try:
        app()
    except KeyboardInterrupt as exc:  # pragma: no cover - raised outside a command body
        err.print("[red]interrupted[/]")
        sys.exit(128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT))


# The other commands live in their own modules and register themselves on `app`.
from glmdata import render_cli, stats_cli  # noqa: E402,F401
