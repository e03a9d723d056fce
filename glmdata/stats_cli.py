"""``glmdata stats`` and ``glmdata split``, registered on the main app."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from glmdata.cli import CallStyle, FromOpt, JsonOpt, StyleOpt, UserError, _check_paths, _options, _run, app, err


@app.command()
def stats(
    file: Annotated[str, typer.Argument(help="Dataset file in any supported format (converted on the fly).")] = "messages.jsonl",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Local tokenizer directory for exact token counts; without it, lengths are characters.")] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Report how many rows and trained tokens this length would cut.")] = None,
    train_on: Annotated[str, typer.Option("--train-on", help="assistant, all or last (see `glmdata render`).")] = "assistant",
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the length histogram as a PNG (needs matplotlib).")] = None,
    template: Annotated[Optional[str], typer.Option("--template", help="Chat template (default glm-4-9b-chat's).")] = None,
    from_format: FromOpt = None,
    call_style: StyleOpt = CallStyle.native,
    as_json: JsonOpt = False,
) -> None:
    """Know the data before training: lengths, truncation at --max-length, tools, loss-mask audit, duplicates."""
    _run(lambda: _stats(file, tokenizer, max_length, train_on, plot, template, _options(from_format, call_style, [], False, False), as_json))


def _stats(file, tokenizer_path, max_length, train_on, plot_path, template, options, as_json) -> int:
    from glmdata.render import TRAIN_ON, TemplateError, load_template
    from glmdata.stats import compute, plot, print_stats

    if train_on not in TRAIN_ON:
        raise UserError(f"--train-on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
    if max_length is not None and max_length <= 0:
        raise UserError("--max-length must be a positive number of tokens")
    tokenizer = None
    if tokenizer_path:
        from glmdata.render_cli import _load_tokenizer

        tokenizer = _load_tokenizer(tokenizer_path)
    try:
        chat_template = load_template(template)
    except TemplateError as exc:
        raise UserError(str(exc)) from None
    try:
        result = compute(file, tokenizer=tokenizer, max_length=max_length, train_on=train_on, options=options, template=chat_template)
    except TemplateError as exc:  # a --template that fails on the rows (or attacks the sandbox)
        raise UserError(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
    else:
        print_stats(result, err)
    if plot_path is not None:
        try:
            plot(result, str(plot_path))
        except ImportError as exc:
            raise UserError(str(exc)) from None
        err.print(escape(f"wrote {plot_path}"))
    if result.report.rows_in == 0:
        err.print(f"[red]{escape(file)}: no rows found[/]")
        return 1
    return 1 if result.report.rejected else 0


@app.command()
def split(
    file: Annotated[str, typer.Argument(help="Dataset file in any supported format (a file, not stdin: it is read twice).")],
    eval_fraction: Annotated[float, typer.Option("--eval", help="Share of rows for evaluation.")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same split.")] = 42,
    train_out: Annotated[Optional[str], typer.Option("--train", help="Train output. Default: FILE's stem + .train.jsonl")] = None,
    eval_out: Annotated[Optional[str], typer.Option("--eval-output", help="Eval output. Default: FILE's stem + .eval.jsonl")] = None,
    from_format: FromOpt = None,
    call_style: StyleOpt = CallStyle.native,
    as_json: JsonOpt = False,
) -> None:
    """Deterministic train/eval split, stratified so that tool-call rows are in both parts."""
    _run(lambda: _split(file, eval_fraction, seed, train_out, eval_out, _options(from_format, call_style, [], False, False), as_json))


def _split(file, fraction, seed, train_out, eval_out, options, as_json) -> int:
    from glmdata.split import split_file

    if file == "-":
        raise UserError("split reads its input twice: give a file, not stdin")
    if not 0 < fraction < 1:
        raise UserError(f"--eval must be between 0 and 1 (a share of rows), not {fraction}")
    stem = str(Path(file).with_suffix("")).removesuffix(".json")
    train_out = train_out or f"{stem}.train.jsonl"
    eval_out = eval_out or f"{stem}.eval.jsonl"
    _check_paths(file, train_out, eval_out)
    _check_paths(file, eval_out, train_out)
    result = split_file(file, train_out, eval_out, fraction=fraction, seed=seed, options=options)
    summary = {"source": file, "train": result.train, "eval": result.eval, "train_path": train_out, "eval_path": eval_out, "seed": seed, "strata": {k: {"train": t, "eval": e} for k, (t, e) in result.per_stratum.items()}, "rejected": result.report.rejected}
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    err.print(escape(f"wrote {result.train:,} rows to {train_out} and {result.eval:,} rows to {eval_out} (seed {seed})"))
    for name, (t, e) in result.per_stratum.items():
        err.print(f"  {name}: {t:,} train, {e:,} eval")
    if result.report.rejected:
        err.print(f"[red]{result.report.rejected:,} rows were rejected and are in neither part[/] (see `glmdata validate {escape(file)}`)")
        return 1
    return 0
