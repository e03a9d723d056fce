"""The ``glmdata`` command. Data goes to stdout, people read stderr.

Exit codes: 0 ok, 1 the data has problems, 2 usage or I/O error. A user error is one line saying
what and how to fix; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from glmdata.repairs import REPAIRS

app = typer.Typer(
    name="glmdata",
    help="Prepare chat and tool-call datasets for GLM-4: convert, validate, render, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
DEBUG = {"on": False}
SHOW_FINDINGS = 10


class UserError(Exception):
    """A usage or I/O problem: printed as one line, exit 2."""


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
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=1, help="Convert in this many processes; output order and bytes are the same as with one.")]


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
            err.print(f"[red]{_where(source, result)}[/] {issue.path}: {issue.message} [dim]({issue.code}; fix: {issue.hint})[/]")
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
        err.print(f"[red]{report.source}: no rows found[/] (the file is empty or holds only whitespace)")
        return 1
    return 1 if report.rejected else 0


def _run(body) -> None:
    """Run a command body (a no-argument callable), turning user errors into one line and the
    right exit code. Option parsing that can fail belongs inside ``body``."""
    from glmdata.io import InputError

    try:
        code = body()
    except (UserError, InputError) as exc:
        err.print(f"[red]error:[/] {exc}")
        if DEBUG["on"]:
            err.print_exception()
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/] {exc.filename or ''}: {exc.strerror or exc}")
        if DEBUG["on"]:
            err.print_exception()
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]: no output was written")
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


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
    rejects: Annotated[Optional[str], typer.Option("--rejects", help="Where rejected rows go, verbatim with index and reasons. Default: OUTPUT with .rejects.jsonl.")] = None,
    report: ReportOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    workers: WorkersOpt = 1,
) -> None:
    """Convert a dataset to GLM-4 messages JSONL, repairing what can be repaired and rejecting the rest."""
    _run(lambda: _convert(input, output, _options(from_format, call_style, no_repair, strict, dedupe), rejects, report, as_json, quiet, workers))


def _rejects_path(output: str) -> str:
    if output == "-":
        return "rejects.jsonl"
    base = output[:-6] if output.endswith(".jsonl") else output
    return f"{base}.rejects.jsonl"


def _check_paths(input: str, output: str, rejects: str) -> None:
    if output != "-" and input != "-":
        src, dst = Path(input), Path(output)
        if dst.exists() and src.exists() and dst.resolve() == src.resolve():
            raise UserError(f"output {output} is the input file; write to another path (the input is never modified)")
    for path in {output, rejects} - {"-"}:
        parent = Path(path).parent
        if not parent.is_dir():
            raise UserError(f"{path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UserError(f"{path}: directory {parent} is not writable")


def _convert(input: str, output: str, options, rejects: str | None, report_path: Path | None, as_json: bool, quiet: bool, workers: int = 1) -> int:
    from glmdata.convert import convert_file
    from glmdata.io import atomic_writer, dump_row
    from glmdata.report import Report

    rejects = rejects or _rejects_path(output)
    _check_paths(input, output, rejects)
    if as_json and output == "-":
        raise UserError("--json prints the report on stdout, which -o - already uses for data; use --report FILE")
    report = Report(input)
    findings = []
    with ExitStack() as stack:
        out = stack.enter_context(atomic_writer(output))
        bad = stack.enter_context(atomic_writer(rejects))
        progress = stack.enter_context(_progress(err.is_terminal and not quiet))
        task = progress.add_task("converting", total=None)
        for result in convert_file(input, options, workers=workers, decode=False):
            report.add(result)
            if result.ok:
                out.write(result.encoded + b"\n")
            elif result.rejected:
                bad.write(dump_row(result.reject_record(input)))
                if len(findings) < SHOW_FINDINGS:
                    findings.append(result)
            progress.advance(task)
    assert report.balanced
    if not quiet:
        _print_findings(input, findings, report.rejected)
    code = _finish(report, report_path, as_json, quiet)
    if not quiet:
        where = "stdout" if output == "-" else output
        err.print(f"wrote {report.rows_out:,} rows to {where}" + (f", {report.rejected:,} rejected rows to {rejects}" if report.rejected else ""))
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
    from glmdata.convert import convert_file
    from glmdata.report import Report

    report = Report(input)
    findings = []
    with _progress(err.is_terminal and not quiet) as progress:
        task = progress.add_task("validating", total=None)
        for result in convert_file(input, options, workers=workers, decode=False):
            report.add(result)
            if result.rejected and len(findings) < SHOW_FINDINGS:
                findings.append(result)
            progress.advance(task)
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
            err.print(f"[red]stale:[/] {output / name} (run `glmdata schema`)")
        return 1 if stale else 0
    output.mkdir(parents=True, exist_ok=True)
    for name, text in schema_texts().items():
        with atomic_writer(output / name) as out:
            out.write(text.encode())
        err.print(f"wrote {output / name}")
    return 0


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command body
        err.print("[red]interrupted[/]")
        sys.exit(130)


# The other commands live in their own modules and register themselves on `app`.
from glmdata import render_cli, stats_cli  # noqa: E402,F401
