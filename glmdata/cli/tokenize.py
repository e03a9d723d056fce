"""``glmdata tokenize``: a dataset to token ids and labels in a Parquet file, ready to train on."""

from __future__ import annotations

from contextlib import closing
from itertools import islice
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from glmdata.cli import common

if TYPE_CHECKING:
    from collections.abc import Iterator

    from glmdata.result import Result

BATCH = 1000


def tokenize(
    input: common.InputArg,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Local tokenizer directory of the model.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output Parquet file.")] = "train.parquet",
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Chat template: a packaged name (glm-4-9b-chat, glm-4-9b-chat-v2, glm-4-0414, glm-4.5, glm-4.6, "
            "NAME.generation), a .jinja file, a tokenizer_config.json or a tokenizer directory. "
            "Default: the tokenizer directory's own template when it is a known one (what glmtrain trains with), "
            "else glm-4-9b-chat's.",
        ),
    ] = None,
    reasoning: common.ReasoningOpt = "text",
    train_on: common.TrainOnOpt = "assistant",
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Cut each row to this many tokens, as training does.")
    ] = None,
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
    as_json: common.JsonOpt = False,
    quiet: common.QuietOpt = False,
    workers: common.WorkersOpt = 1,
) -> None:
    """Tokenize a dataset once (ids, labels, masks and the source row), for `glmtrain run FILE.parquet`."""

    def body() -> int:
        from glmdata.render import TemplateError

        options = common.conversion_options(from_format, call_style)
        train = common.checked_train_on(train_on)
        thoughts = common.checked_reasoning(reasoning)
        common.check_max_length(max_length)
        common.check_paths(input, output)
        if not output.endswith(".parquet"):
            raise common.UserError(f"--output must be a .parquet file, not {output!r}")
        chat = common.chat_template(template if template is not None else _own_template(tokenizer))
        loaded = common.tokenizer_at(tokenizer)
        try:
            return tokenize_dataset(
                input, output, loaded, chat, train, max_length, options, workers, as_json, quiet, thoughts
            )
        except (TemplateError, ImportError) as exc:
            raise common.UserError(str(exc)) from None

    common.run(body, stdout=as_json)


def _own_template(tokenizer_dir: str) -> str | None:
    """The tokenizer directory's own chat template when glmdata knows it (glm-4-9b-chat ships two
    variants), else None (the default): the template ``glmtrain run`` trains with, so that the file
    is one it takes."""
    from glmdata.render import TemplateError, known_template, load_template

    try:
        return known_template(load_template(tokenizer_dir))
    except TemplateError:
        return None


def tokenize_dataset(
    input: str,
    output: str,
    tokenizer: Any,
    template: Any,
    train_on: Any,
    max_length: int | None,
    options: Any,
    workers: int,
    as_json: bool,
    quiet: bool,
    reasoning: Any = "text",
) -> int:
    """Write the Parquet file; exit 1 when rows were rejected (by conversion, or with nothing to train)."""
    from glmdata import jsontext, tokenized
    from glmdata.issues import Issue
    from glmdata.masks import MaskError, encode_batch
    from glmdata.render import NothingToTrain, render_spans
    from glmdata.report import Report

    made_with = tokenized.provenance(tokenizer, template, train_on, max_length, tokenizer_name="", reasoning=reasoning)
    report = Report(input)
    totals = {"rows": 0, "tokens": 0, "trained_tokens": 0}
    rejected: list[Result] = []

    def batches(results: Iterator[Result]) -> Iterator[dict[str, list]]:
        while chunk := list(islice(results, BATCH)):
            kept, rendered = [], []
            for result in chunk:
                if result.ok:
                    messages = (result.row or jsontext.loads(result.encoded))["messages"]
                    try:
                        rendered.append(
                            render_spans(messages, train_on=train_on, template=template, reasoning=reasoning)
                        )
                        kept.append(result.index)
                    except NothingToTrain as exc:  # e.g. every assistant turn says loss: false
                        result.issues.append(Issue("no-assistant", "messages", str(exc)))
                        result.rejected = True
                    except ValueError as exc:  # a row the template's input cannot hold
                        raise common.UserError(f"row {result.index}: {exc}") from None
                report.add(result)
                if result.rejected and len(rejected) < 5:
                    rejected.append(result)
            try:
                rows = encode_batch(rendered, tokenizer, max_length=max_length)
            except MaskError as exc:
                raise common.UserError(str(exc)) from None
            columns: dict[str, list] = {name: [row[name] for row in rows] for name in tokenized.COLUMNS[:3]}
            columns["row"] = kept
            totals["rows"] += len(rows)
            totals["tokens"] += sum(map(len, columns["input_ids"]))
            totals["trained_tokens"] += sum(map(sum, columns["assistant_masks"]))
            yield columns

    bar = common.progress(not quiet and common.err.is_terminal)
    converting = closing(common.converted(input, options, workers, bar, "tokenizing"))
    with bar, converting as results, common.output(output) as out:
        tokenized.write(out.stream, batches(results), made_with)
    common.print_findings(input, rejected, report.rejected)
    summary = {**totals, "rows_in": report.rows_in, "rejected": report.rejected, "output": output}
    if as_json:
        common.print_json(summary)
    elif not quiet:
        common.err.print(
            escape(
                f"wrote {output}: {_rows(totals['rows'])}, {totals['tokens']:,} tokens "
                f"({totals['trained_tokens']:,} trained) of {_rows(report.rows_in)} read; "
                f"{_rows(report.rejected)} rejected"
            )
        )
    if report.rows_in == 0:
        common.err.print(f"[red]{escape(input)}: no rows found[/]")
        return 1
    return 1 if report.rejected else 0


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")
