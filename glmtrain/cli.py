"""The ``glmtrain`` command: fine-tune GLM-4 with LoRA on data glmdata validated.

Data goes to stdout, people read stderr. Exit codes: 0 ok, 1 the data has problems (rows glmdata
rejects, a template mismatch), 2 usage or I/O error. A user error is one line saying what and how
to fix; ``glmtrain --debug`` shows the traceback. torch, transformers, trl, peft, datasets and
swanlab are imported only by the commands that need them, so ``glmtrain --help`` is instant.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="glmtrain",
    help="Fine-tune GLM-4 with LoRA (TRL SFTTrainer + PEFT) on GLM-4 messages data validated by glmdata.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
DEBUG = {"on": False}

ACCELERATE_CONFIGS = {
    "zero2": "zero2.yaml",
    "zero3": "zero3.yaml",
    "fsdp": "fsdp.yaml",
    "ds_zero2": "ds_zero2.json",
    "ds_zero3": "ds_zero3.json",
}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    DEBUG["on"] = debug


# what the train extra installs; a command that needs one of them and lacks it says how to install
TRAINING_MODULES = frozenset({"torch", "transformers", "trl", "peft", "datasets", "accelerate", "swanlab"})


def _guard(fn: Callable[[], Any]) -> Any:
    """Run a command body: a GlmtrainError becomes one line on stderr and its exit code."""
    from glmtrain.config import GlmtrainError

    try:
        return fn()
    except GlmtrainError as e:
        if DEBUG["on"]:
            traceback.print_exc()
        if getattr(e, "quiet", False):  # said once, by the main process of a launcher
            raise typer.Exit(e.exit_code) from None
        # messages carry paths and data ("x[/].jsonl", "[gMASK]"): text, never markup
        err.print(f"[bold red]error:[/] {escape(e.message)}", markup=True, highlight=False)
        if e.hint:
            err.print(f"[dim]fix:[/] {escape(e.hint)}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in TRAINING_MODULES:
            raise
        if DEBUG["on"]:
            traceback.print_exc()
        err.print(
            f"[bold red]error:[/] glmtrain needs the training dependencies, and {escape(missing)} is not installed",
            highlight=False,
        )
        err.print(
            "[dim]fix:[/] pip install torch==2.13.0 (or the CUDA build for your GPU, first: a plain install pulls "
            r"a multi-GB CUDA build), then pip install 'glmdata\[train]' (from a checkout: pip install -e '.\[train]')"
        )
        raise typer.Exit(2) from None


# ------------------------------------------------------------------------------------------ run

# parameters of `run` that are not settings; every other one is the setting of the same name
NOT_SETTINGS = frozenset({"recipe", "config", "set_", "dry_run", "json_"})


@app.command()
def run(
    data: Annotated[
        list[str] | None,
        typer.Argument(
            help="Training data: GLM-4 messages JSONL (any format glmdata reads), or a FILE.parquet from `glmdata "
            "tokenize` (trained on as it is, after checking it was made with this run's tokenizer, template, "
            "--train-on and --max-length). Several files are mixed (see --weights).",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="Mixing weights, one per DATA file in order, e.g. 2,1: how many times each training row of that "
            "file is drawn per epoch (2: twice; 0.5: a seeded half of its rows; 1.5: every row once and a seeded "
            "half again). (default: 1 each)",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="A shipped recipe (`glmtrain recipes` lists them).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="A YAML file of settings (same keys as a recipe).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub id, local directory, or tiny-random. (default: THUDM/glm-4-9b-chat-hf)",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Where the adapter, tokenizer, config, reports and checkpoints go. (default: output/glmtrain)",
            show_default=False,
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer",
            help="Tokenizer directory to use instead of the model's; with --dry-run the model is not needed.",
        ),
    ] = None,
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval-data",
            help="Held-out data file (instead of splitting DATA): messages, or a tokenized FILE.parquet (evaluation "
            "loss only: it has no messages to make prediction prompts of).",
        ),
    ] = None,
    eval_rows: Annotated[
        str | None,
        typer.Option(
            "--eval-rows",
            help="Held-out rows an evaluation reads (a seeded sample): a number, 0 (all) or auto (at most 200, and "
            "no more than the rows trained between two evaluations). (default: auto)",
            show_default=False,
        ),
    ] = None,
    eval_split: Annotated[
        float | None,
        typer.Option(
            "--eval-split",
            help="Share of DATA held out, by glmdata's stratified split (tool-call rows in both parts); "
            ">= 1: about that many rows; 0: no evaluation. (default: 0.1)",
            show_default=False,
        ),
    ] = None,
    skip_invalid: Annotated[
        bool | None,
        typer.Option(
            "--skip-invalid/--no-skip-invalid",
            help="Train on the valid rows when glmdata rejects some (default: stop).",
            show_default=False,
        ),
    ] = None,
    train_on: Annotated[
        str | None,
        typer.Option(
            "--train-on",
            help="Trained tokens: assistant (every assistant turn), last (the last one), all. (default: assistant)",
            show_default=False,
        ),
    ] = None,
    max_length: Annotated[
        str | None,
        typer.Option(
            "--max-length",
            help="Tokens per row: a number, auto (from the data, capped at 4096) or none. (default: auto)",
            show_default=False,
        ),
    ] = None,
    num_epochs: Annotated[
        float | None, typer.Option("--num-epochs", help="Epochs. (default: 1)", show_default=False)
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Optimizer steps; overrides --num-epochs when > 0.")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", "--lr", help="Default: 5e-4.", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Per-device batch size. (default: 1)", show_default=False)
    ] = None,
    eval_batch_size: Annotated[
        int | None, typer.Option("--eval-batch-size", help="Default: 1.", show_default=False)
    ] = None,
    gradient_accumulation_steps: Annotated[
        int | None,
        typer.Option("--gradient-accumulation-steps", "--grad-accum", help="Default: 2.", show_default=False),
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="Default: 8.", show_default=False)] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", help="Default: 32.", show_default=False)] = None,
    lora_dropout: Annotated[
        float | None, typer.Option("--lora-dropout", help="Default: 0.1.", show_default=False)
    ] = None,
    lora_target_modules: Annotated[
        str | None,
        typer.Option(
            "--lora-target-modules", help="Comma-separated. (default: q_proj,k_proj,v_proj)", show_default=False
        ),
    ] = None,
    logging_steps: Annotated[
        float | None, typer.Option("--logging-steps", help="Default: 10.", show_default=False)
    ] = None,
    eval_steps: Annotated[
        float | None,
        typer.Option(
            "--eval-steps",
            help="Steps between evaluations; <1 = fraction of the run. (default: 0.1)",
            show_default=False,
        ),
    ] = None,
    save_steps: Annotated[
        float | None,
        typer.Option(
            "--save-steps",
            help="Steps between checkpoints; <1 = fraction of the run. (default: 0.1)",
            show_default=False,
        ),
    ] = None,
    save_total_limit: Annotated[
        int | None, typer.Option("--save-total-limit", help="Keep at most this many checkpoints.")
    ] = None,
    warmup_steps: Annotated[
        float | None,
        typer.Option(
            "--warmup-steps", help="Warm-up steps; <1 = fraction of the run. (default: 0)", show_default=False
        ),
    ] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Default: on.", show_default=False),
    ] = None,
    packing: Annotated[
        bool | None,
        typer.Option(
            "--packing/--no-packing",
            help="Pack rows into max_length blocks (TRL bfd; needs flash attention). (default: off)",
            show_default=False,
        ),
    ] = None,
    padding_free: Annotated[
        bool | None,
        typer.Option(
            "--padding-free/--no-padding-free",
            help="Lay each batch's rows end to end (position_ids, no padding) instead of padding them to the "
            "longest. (default: auto: padding-free when the model builds its attention masks from position_ids "
            "and the batch holds more than one row)",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Default: 42.", show_default=False)] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype", help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.", show_default=False
        ),
    ] = None,
    load_in_4bit: Annotated[
        bool | None,
        typer.Option(
            "--load-in-4bit/--no-load-in-4bit",
            help="QLoRA: load the base model in 4 bits (needs a GPU and bitsandbytes).",
            show_default=False,
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="Template the rows are rendered with: glmdata (official glm-4-9b-chat), model (the tokenizer's "
            "own), or a .jinja file. (default: glmdata)",
            show_default=False,
        ),
    ] = None,
    allow_template_mismatch: Annotated[
        bool | None,
        typer.Option(
            "--allow-template-mismatch/--no-allow-template-mismatch",
            help="Train even if the model tokenizer's template renders the data differently.",
            show_default=False,
        ),
    ] = None,
    save_template: Annotated[
        bool | None,
        typer.Option(
            "--save-template/--keep-model-template",
            help="Write the training template into the saved tokenizer when the model's differs. (default: save)",
            show_default=False,
        ),
    ] = None,
    tracker: Annotated[
        str | None,
        typer.Option(
            "--tracker",
            help="SwanLab: auto (cloud when logged in, else offline), cloud, offline, none. (default: auto)",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="SwanLab project. (default: glmtrain)", show_default=False)
    ] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="SwanLab experiment name.")] = None,
    num_predictions: Annotated[
        int | None,
        typer.Option(
            "--num-predictions", help="Held-out prompts answered at each evaluation. (default: 4)", show_default=False
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option("--max-new-tokens", help="Tokens generated per prediction. (default: 256)", show_default=False),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Resume from a checkpoint: latest (in --output-dir) or a checkpoint directory."),
    ] = None,
    deepspeed: Annotated[
        str | None,
        typer.Option(
            "--deepspeed",
            help="DeepSpeed config for torchrun/deepspeed launchers: zero2, zero3 (shipped) or a JSON file.",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="KEY=VALUE for any setting; sft.KEY=VALUE for any other SFTConfig field (repeatable)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, tokenize and print the plan, without loading weights.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the plan (--dry-run) or the run summary as JSON on stdout.")
    ] = False,
) -> None:
    """Validate DATA with glmdata, check the chat template, then train a LoRA adapter with TRL's SFTTrainer.

    DATA is one file or several, mixed by --weights; a FILE.parquet from `glmdata tokenize` is trained on as it is.

    Settings come from the defaults (the GLM-4 tool-call tutorial), then --recipe or --config, then flags.
    """
    # an empty DATA (no files given) leaves `data:` of a recipe or config file as it is
    flags = {
        name: value
        for name, value in locals().items()
        if name not in NOT_SETTINGS and value is not None and value != [] and value != ()
    }

    def body() -> None:
        import signal

        from glmtrain import config as cfgmod
        from glmtrain import train

        layers: list[tuple[str, dict[str, Any]]] = []
        if recipe:
            layers.append((f"recipe {recipe}", cfgmod.load_recipe(recipe)))
        if config:
            layers.append((str(config), cfgmod.load_config_file(config)))
        layers.append(("flags", flags))
        # each --set is a layer of its own, after the flags: it wins, and an error quotes it
        layers += [(f"--set {item}", cfgmod.parse_assignment(item)) for item in set_ or []]
        cfg = cfgmod.merge(*layers)

        with train.signals_stop(signal.SIGTERM):  # SIGTERM ends a run as Ctrl-C does: it says where
            result = train.run(cfg, err, dry_run=dry_run)
        if not train.is_main_process():
            return  # under a launcher the main process prints the result
        if json_:
            sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        elif not dry_run:
            _print_summary(result)

    _guard(body)


def _print_summary(result: dict[str, Any]) -> None:
    from glmtrain.config import plural

    err.print(
        f"[green]done:[/] {plural(result['global_step'], 'step')}"
        + (f" (resumed from {escape(result['resumed_from'])})" if result.get("resumed_from") else "")
        + f", train loss {result['train_loss']:.4f}"
        + (f", eval loss {result['eval_loss']:.4f}" if result.get("eval_loss") is not None else "")
        + escape(f"; adapter and tokenizer in {result['output_dir']}")
    )
    if result.get("swanlab") and result["swanlab"]["mode"] == "offline":
        log_dir = escape(str(result["swanlab"]["log_dir"]))
        err.print(f"[dim]SwanLab (offline) logs in {log_dir}; upload with `swanlab sync DIR` after `swanlab login`[/]")


# ------------------------------------------------------------------------------- other commands


@app.command()
def recipes(
    name: Annotated[
        str | None, typer.Argument(help="Print this recipe's YAML (to copy into a --config file).", show_default=False)
    ] = None,
) -> None:
    """List the shipped recipes, or print one."""

    def body() -> None:
        from glmtrain import config as cfgmod

        if name is None:
            for recipe_name, description in cfgmod.list_recipes().items():
                sys.stdout.write(f"{recipe_name}\t{description}\n")
            return
        cfgmod.load_recipe(name)  # unknown name -> error with the known ones
        sys.stdout.write((cfgmod.RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))

    _guard(body)


@app.command("accelerate-config")
def accelerate_config(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(ACCELERATE_CONFIGS)}.", show_default=False)],
) -> None:
    """Print the path of a shipped accelerate / DeepSpeed config, for `accelerate launch --config_file`."""

    def body() -> None:
        from glmtrain.config import ACCELERATE_DIR, GlmtrainError

        if name not in ACCELERATE_CONFIGS:
            raise GlmtrainError(f"unknown config {name!r}", f"use one of: {', '.join(ACCELERATE_CONFIGS)}")
        sys.stdout.write(str(ACCELERATE_DIR / ACCELERATE_CONFIGS[name]) + "\n")

    _guard(body)


@app.command()
def merge(
    output_dir: Annotated[Path, typer.Argument(help="Output directory of `glmtrain run`.", show_default=False)],
    target: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Where to write the merged model. (default: OUTPUT_DIR/merged)", show_default=False
        ),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Base model, if it is no longer where the run found it.")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, bfloat16, float16, float32.")] = "auto",
) -> None:
    """Merge the LoRA adapter into the base model and save a standalone model with the tokenizer."""

    def body() -> None:
        from glmtrain.merge import merge as merge_adapter

        path = merge_adapter(output_dir, target, base_model=base_model, dtype=dtype)
        err.print(f"[green]merged model written to[/] {escape(str(path))}")
        sys.stdout.write(f"{path}\n")

    _guard(body)


@app.command()
def chat(
    output_dir: Annotated[Path, typer.Argument(help="Output directory of `glmtrain run`.", show_default=False)],
    tools: Annotated[
        Path | None, typer.Option("--tools", help="JSON file with a list of tools the model may call.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 512,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Base model, if it is no longer where the run found it.")
    ] = None,
) -> None:
    """Chat in the terminal with the trained adapter; tool calls are shown parsed."""

    def body() -> None:
        from glmtrain.chat import ChatSession, chat_loop, load_tools
        from glmtrain.merge import load_trained

        tool_list = load_tools(tools) if tools else None
        model, tokenizer = load_trained(output_dir, base_model=base_model)
        session = ChatSession(model, tokenizer, tools=tool_list, system=system, max_new_tokens=max_new_tokens)
        chat_loop(session, err, read=_read_line, out=sys.stdout)

    _guard(body)


def _read_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


@app.command("eval")
def eval_(
    output_dir: Annotated[Path, typer.Argument(help="Output directory of `glmtrain run`.", show_default=False)],
    data: Annotated[
        str,
        typer.Argument(
            help="Held-out rows (any format glmdata reads); the run's own training file means the rows it held out.",
            show_default=False,
        ),
    ],
    rows: Annotated[int | None, typer.Option("--rows", help="Evaluate at most N rows (a seeded sample).")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the --rows sample. (default: the run's)", show_default=False)
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens generated per turn.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Turns generated together.")] = 8,
    family: Annotated[
        str | None,
        typer.Option(
            "--family", help="Call format to read answers in. (default: the saved template's)", show_default=False
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Predictions JSONL. (default: OUTPUT_DIR/eval_predictions.jsonl)",
            show_default=False,
        ),
    ] = None,
    skip_invalid: Annotated[
        bool | None,
        typer.Option(
            "--skip-invalid/--no-skip-invalid",
            help="Evaluate the valid rows when glmdata rejects some. (default: the run's setting)",
            show_default=False,
        ),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Base model, if it is no longer where the run found it.")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, bfloat16, float16, float32.")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Generate every held-out assistant turn with the adapter; score tool calls and answers."""

    def body() -> None:
        from glmtrain.evaluate import evaluate, print_summary

        summary = evaluate(
            output_dir, data, console=err, rows=rows, seed=seed, max_new_tokens=max_new_tokens,
            batch_size=batch_size, family=family, output=output, base_model=base_model, dtype=dtype,
            skip_invalid=skip_invalid,
        )  # fmt: skip
        print_summary(summary, err)
        if json_:
            sys.stdout.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")

    _guard(body)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glmtrain`` script and ``python -m glmtrain``."""
    app(args=argv, prog_name="glmtrain")


if __name__ == "__main__":  # pragma: no cover
    main()
