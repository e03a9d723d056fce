"""``glmdata stats``: lengths, truncation, tools, the loss-mask audit and duplicates of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from glmdata.cli import common

if TYPE_CHECKING:
    from glmdata.convert import Options


def stats(
    file: Annotated[
        str, typer.Argument(help="Dataset file in any supported format (converted on the fly).")
    ] = "messages.jsonl",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer", help="Local tokenizer directory for exact token counts; without it, lengths are characters."
        ),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="Report how many rows and trained tokens this length would cut."),
    ] = None,
    train_on: common.TrainOnOpt = "assistant",
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the length histogram as a PNG (needs matplotlib).")
    ] = None,
    template: common.TemplateOpt = None,
    reasoning: common.ReasoningOpt = "text",
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
    as_json: common.JsonOpt = False,
) -> None:
    """Know the data before training: lengths, truncation at --max-length, tools, loss-mask audit, duplicates."""
    common.run(
        lambda: dataset_stats(
            file,
            tokenizer,
            max_length,
            train_on,
            plot,
            template,
            common.conversion_options(from_format, call_style),
            as_json,
            reasoning,
        ),
        stdout=as_json,
    )


def dataset_stats(
    file: str,
    tokenizer_path: str | None,
    max_length: int | None,
    train_on: str,
    plot_path: Path | None,
    template: str | None,
    options: Options,
    as_json: bool,
    reasoning: str = "text",
) -> int:
    """Compute and print the statistics of ``file``; exit 1 when rows are rejected or there are none."""
    from glmdata.render import TemplateError
    from glmdata.stats import compute, plot, print_stats, pyplot

    train = common.checked_train_on(train_on)
    thoughts = common.checked_reasoning(reasoning)
    common.check_max_length(max_length)
    common.check_paths(file, plot_path)
    if plot_path is not None:
        try:
            pyplot()  # before any work: a missing matplotlib should not cost a pass over the data
        except ImportError as exc:
            raise common.UserError(str(exc)) from None
    tokenizer = common.tokenizer_at(tokenizer_path) if tokenizer_path else None
    chat = common.chat_template(template)
    try:
        result = compute(
            file,
            tokenizer=tokenizer,
            max_length=max_length,
            train_on=train,
            options=options,
            template=chat,
            reasoning=thoughts,
        )
    except (TemplateError, ValueError) as exc:  # a --template that fails on the rows (or attacks the sandbox)
        raise common.UserError(str(exc)) from None
    if as_json:
        common.print_json(result.to_dict())
    else:
        print_stats(result, common.err)
    if plot_path is not None:
        plot(result, str(plot_path))
        common.err.print(escape(f"wrote {plot_path}"))
    if result.report.rows_in == 0:
        common.err.print(f"[red]{escape(file)}: no rows found[/]")
        return 1
    return 1 if result.report.rejected else 0
