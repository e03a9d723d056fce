"""``glmdata split``: a deterministic train/eval split, stratified on tool calls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from glmdata.cli import common

if TYPE_CHECKING:
    from glmdata.convert import Options


def split(
    file: Annotated[
        str, typer.Argument(help="Dataset file in any supported format (a file, not stdin: it is read twice).")
    ],
    eval_fraction: Annotated[float, typer.Option("--eval", help="Share of rows for evaluation.")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same split.")] = 42,
    train_out: Annotated[
        str | None, typer.Option("--train", help="Train output. Default: FILE's stem + .train.jsonl")
    ] = None,
    eval_out: Annotated[
        str | None, typer.Option("--eval-output", help="Eval output. Default: FILE's stem + .eval.jsonl")
    ] = None,
    from_format: common.FromOpt = None,
    call_style: common.StyleOpt = common.CallStyle.native,
    as_json: common.JsonOpt = False,
) -> None:
    """Deterministic train/eval split, stratified so that tool-call rows are in both parts."""
    common.run(
        lambda: split_dataset(
            file, eval_fraction, seed, train_out, eval_out, common.conversion_options(from_format, call_style), as_json
        )
    )


def split_dataset(
    file: str,
    fraction: float,
    seed: int,
    train_out: str | None,
    eval_out: str | None,
    options: Options,
    as_json: bool,
) -> int:
    """Split ``file`` into its train and eval files; exit 1 when rows were rejected (in neither part)."""
    from glmdata.split import split_file

    if file == "-":
        raise common.UserError("split reads its input twice: give a file, not stdin")
    if not 0 < fraction < 1:
        raise common.UserError(f"--eval must be between 0 and 1 (a share of rows), not {fraction}")
    stem = str(Path(file).with_suffix("")).removesuffix(".json")
    train_out = train_out or f"{stem}.train.jsonl"
    eval_out = eval_out or f"{stem}.eval.jsonl"
    common.check_paths(file, train_out, eval_out)
    result = split_file(file, train_out, eval_out, fraction=fraction, seed=seed, options=options)
    if as_json:
        strata = {name: {"train": t, "eval": e} for name, (t, e) in result.per_stratum.items()}
        common.print_json(
            {
                "source": file,
                "train": result.train,
                "eval": result.eval,
                "train_path": train_out,
                "eval_path": eval_out,
                "seed": seed,
                "strata": strata,
                "rejected": result.report.rejected,
            }
        )
    common.err.print(
        escape(f"wrote {result.train:,} rows to {train_out} and {result.eval:,} rows to {eval_out} (seed {seed})")
    )
    for name, (t, e) in result.per_stratum.items():
        common.err.print(f"  {name}: {t:,} train, {e:,} eval")
    if result.report.rejected:
        common.err.print(
            f"[red]{result.report.rejected:,} rows were rejected and are in neither part[/] "
            f"(see `glmdata validate {escape(file)}`)"
        )
        return 1
    return 0
