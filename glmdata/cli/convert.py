"""``glmdata convert``: a dataset to GLM-4 messages JSONL, rejected rows to a rejects file."""

from __future__ import annotations

import os
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from glmdata.cli import common

if TYPE_CHECKING:
    from glmdata.convert import Options
    from glmdata.result import Result

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output JSONL of GLM-4 messages rows (- for stdout).")]
RejectsOpt = Annotated[
    str | None,
    typer.Option(
        "--rejects",
        help="Where rejected rows go, verbatim with index and reasons (always written when given). "
        "Default: OUTPUT with .rejects.jsonl, written only when rows are rejected (a stale one is removed); "
        "with -o - none unless given.",
    ),
]

TemplateOpt = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Write each row in the shape this template family reads through apply_chat_template: "
        "glm-4-9b-chat / glm-4-9b-chat-v2: {messages} with tools on the system message, calls as metadata, "
        "observation results; glm-4-0414: {messages, tools} (tools as the template variable), calls as metadata; "
        "glm-4.5 / glm-4.6: {messages, tools} with OpenAI tool_calls (arguments objects), role tool results, "
        "reasoning_content. Default: glm-4-9b-chat's shape.",
    ),
]
ReasoningOpt = Annotated[
    str,
    typer.Option(
        "--reasoning",
        help="Reasoning for a template with no reasoning slot (glm-4-9b-chat, the default, glm-4-9b-chat-v2, glm-4-0414): "
        "text (into the content as <think>...</think>, repair reasoning-as-text), drop (repair reasoning-dropped), "
        "or reject (error reasoning-without-slot).",
    ),
]


def convert(
    input: common.InputArg,
    output: OutputOpt = "messages.jsonl",
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
    no_repair: common.NoRepairOpt = [],  # noqa: B006 - typer reads the default
    strict: common.StrictOpt = False,
    dedupe: common.DedupeOpt = False,
    rejects: RejectsOpt = None,
    report: common.ReportOpt = None,
    as_json: common.JsonOpt = False,
    quiet: common.QuietOpt = False,
    workers: common.WorkersOpt = 1,
    template: TemplateOpt = None,
    reasoning: ReasoningOpt = "text",
) -> None:
    """Convert a dataset to GLM-4 messages JSONL, repairing what can be repaired and rejecting the rest."""
    common.run(
        lambda: convert_dataset(
            input,
            output,
            template_options(
                common.conversion_options(from_format, call_style, no_repair, strict, dedupe), template, reasoning
            ),
            rejects,
            report,
            as_json,
            quiet,
            workers,
        ),
        stdout="-" in (output, rejects) or as_json,
    )


def template_options(options: Options, template: str | None, reasoning: str) -> Options:
    """``options`` with ``--template`` and ``--reasoning``; a bad value is a usage error."""
    from dataclasses import replace

    try:
        return replace(options, template=template, reasoning=reasoning)  # type: ignore[arg-type] # checked there
    except ValueError as exc:
        raise common.UserError(str(exc).replace("reasoning must", "--reasoning must")) from None


def default_rejects_path(output: str) -> str | None:
    """The default rejects file: beside the output; none when the output is stdout."""
    if output == "-":
        return None
    base = output[:-6] if output.endswith(".jsonl") else output
    return f"{base}.rejects.jsonl"


class _NoRows(Exception):
    """Raised inside the writers' block to drop what they opened: an input without rows writes nothing."""


def convert_dataset(
    input: str,
    output_path: str,
    options: Options,
    rejects: str | None,
    report_path: Path | None,
    as_json: bool,
    quiet: bool,
    workers: int = 1,
) -> int:
    """Convert ``input`` to ``output_path`` and give the exit code.

    Rejects go to ``rejects`` when given (always written, empty when nothing is rejected); by
    default beside the output, written only when a row is rejected, a stale one from an earlier run
    removed; with ``-o -`` and no ``--rejects``, to no file (stderr says so). An input with no rows
    writes nothing."""
    from glmdata.jsontext import compact
    from glmdata.report import Report

    named_rejects = rejects is not None
    rejects = rejects if named_rejects else default_rejects_path(output_path)
    common.check_paths(input, output_path, rejects, report_path)
    if as_json and output_path == "-":
        raise common.UserError(
            "--json prints the report on stdout, which -o - already uses for data; use --report FILE"
        )
    report = Report(input)
    findings: list[Result] = []
    try:
        with ExitStack() as stack:
            out = stack.enter_context(common.output(output_path))
            bad = (
                stack.enter_context(common.output(rejects))
                if rejects is not None and named_rejects and rejects != "-"
                else None
            )
            bar = stack.enter_context(common.progress(common.err.is_terminal and not quiet))
            for result in stack.enter_context(closing(common.converted(input, options, workers, bar, "converting"))):
                report.add(result)
                if result.ok:
                    out.write_line(result.encoded)
                elif result.rejected:
                    if rejects is not None:
                        if bad is None:  # opened at the first rejected row
                            bad = stack.enter_context(common.output(rejects))
                        bad.write_line(compact(result.reject_record(input)))
                    if len(findings) < common.SHOW_FINDINGS:
                        findings.append(result)
            if report.rows_in == 0:
                raise _NoRows  # leave no empty file, and an old one as it was
    except _NoRows:
        pass
    stale = None
    if not named_rejects and rejects and not report.rejected and report.rows_in and os.path.isfile(rejects):
        os.unlink(rejects)  # from an earlier run: it does not belong with this output
        stale = rejects
    if not quiet:
        common.print_findings(input, findings, report.rejected)
    code = common.finish(report, report_path, as_json, quiet)
    if not quiet and report.rows_in:
        where = "stdout" if output_path == "-" else output_path
        if report.rejected and rejects is None:
            kept = (
                f"; {report.rejected:,} rejected rows were not saved (the data went to stdout): "
                "pass --rejects FILE to keep them"
            )
        elif report.rejected or named_rejects:
            kept = f", {report.rejected:,} rejected rows to {rejects}"
        else:
            kept = f" (no rejected rows; removed the stale {stale})" if stale else ""
        common.err.print(escape(f"wrote {report.rows_out:,} rows to {where}{kept}"))
    return code
