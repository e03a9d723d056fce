"""``glmdata validate``: every repair and check on a dataset, reported; nothing is written."""

from __future__ import annotations

from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING

from glmdata.cli import common

if TYPE_CHECKING:
    from glmdata.convert import Options
    from glmdata.result import Result


def validate(
    input: common.InputArg,
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
    no_repair: common.NoRepairOpt = [],  # noqa: B006 - typer reads the default
    strict: common.StrictOpt = False,
    dedupe: common.DedupeOpt = False,
    report: common.ReportOpt = None,
    as_json: common.JsonOpt = False,
    quiet: common.QuietOpt = False,
    workers: common.WorkersOpt = 1,
) -> None:
    """Run every repair and check on a dataset and report; nothing is written. Exit 1 if rows would be rejected."""
    common.run(
        lambda: validate_dataset(
            input,
            common.conversion_options(from_format, call_style, no_repair, strict, dedupe),
            report,
            as_json,
            quiet,
            workers,
        ),
        stdout=as_json,
    )


def validate_dataset(
    input: str, options: Options, report_path: Path | None, as_json: bool, quiet: bool, workers: int = 1
) -> int:
    """Convert ``input`` without writing it, report, and give the exit code."""
    from glmdata.report import Report

    common.check_paths(input, report_path)
    report = Report(input)
    findings: list[Result] = []
    with ExitStack() as stack:
        bar = stack.enter_context(common.progress(common.err.is_terminal and not quiet))
        for result in stack.enter_context(closing(common.converted(input, options, workers, bar, "validating"))):
            report.add(result)
            if result.rejected and len(findings) < common.SHOW_FINDINGS:
                findings.append(result)
    if not quiet:
        common.print_findings(input, findings, report.rejected)
    return common.finish(report, report_path, as_json, quiet)
