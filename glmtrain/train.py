"""``glmtrain run``: validate with glmdata, check the template, tokenize with glmdata's masks, train with TRL.

The order matters: every check that can stop a run happens before any weights load. What glmtrain
adds to TRL is only what no library knows: GLM-4 rendering and loss masks (glmdata), validation
first, the template check, token statistics for ``max_length``, and GLM-4 defaults. Training itself
is ``trl.SFTTrainer`` with ``SFTConfig`` and a ``peft.LoraConfig``; the dataset it gets is
pre-tokenized (``input_ids`` + ``assistant_masks``, the mask column SFTTrainer folds into labels).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import os
import random
import signal
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from glmtrain.config import ACCELERATE_DIR, DataProblem, GlmtrainError, TrainConfig, dump, plural

if TYPE_CHECKING:
    from glmdata.models import MessagesRow
    from glmdata.render import TrainOn

# Output files, besides what TRL/PEFT write (adapter, tokenizer, checkpoints, model card).
CONFIG_FILE = "glmtrain.yaml"
REPORT_FILE = "data_report.json"
PLAN_FILE = "plan.json"
PREDICTIONS_FILE = "predictions.jsonl"
SWANLOG_DIR = "swanlog"


# --- data ------------------------------------------------------------------------------------


@dataclass
class Rows:
    """Rows glmdata kept from a file: canonical GLM-4 rows, their row numbers in the file, the report,
    and for each exact duplicate the position of its first copy (so a split keeps copies together)."""

    path: str
    rows: list[MessagesRow]
    indices: list[int]
    report: Any
    copies: dict[int, int] = field(default_factory=dict)

    def subset(self, positions: list[int]) -> Rows:
        return Rows(self.path, [self.rows[i] for i in positions], [self.indices[i] for i in positions], self.report)


def read_rows(path: str, *, skip_invalid: bool, console) -> Rows:
    """Validate ``path`` with glmdata. Stops (exit 1) with glmdata's report if rows would be rejected,
    unless ``skip_invalid``, which keeps the valid rows and says how many were left out."""
    from glmdata.convert import Options, convert_file
    from glmdata.io import InputError
    from glmdata.report import Report

    rows = Rows(str(path), [], [], Report(source=str(path)))
    first_copy: dict[int, int] = {}  # row number -> position
    try:
        for result in convert_file(path, Options()):
            rows.report.add(result)
            if result.ok and result.row is not None:
                if result.duplicate_of is not None and result.duplicate_of in first_copy:
                    rows.copies[len(rows.rows)] = first_copy[result.duplicate_of]
                else:
                    first_copy[result.index] = len(rows.rows)
                rows.rows.append(result.row)
                rows.indices.append(result.index)
    except InputError as e:
        raise GlmtrainError(f"cannot read {path}: {e}", "check the path") from None
    report = rows.report
    if report.rejected and not skip_invalid:
        report.print(console)
        raise DataProblem(
            f"{path}: {report.rejected} of {plural(report.rows_in, 'row')} would be rejected; nothing was loaded or trained",
            "fix them (`glmdata convert` writes the rejects with reasons), "
            "or pass --skip-invalid to train on the valid rows only",
        )
    if report.rejected:
        console.print(
            f"[yellow]--skip-invalid: left out {report.rejected} of {plural(report.rows_in, 'row')} of {escape(str(path))} "
            f"that glmdata rejects[/] (see {REPORT_FILE} in the output directory, or run `glmdata convert`)"
        )
    if not rows.rows:
        raise DataProblem(f"{path}: no rows to train on")
    return rows


def split_rows(rows: Rows, eval_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of the training and held-out rows, by glmdata's stratified split (tool-call rows land
    in both parts; duplicates stay with their first copy). ``eval_split`` is a fraction (< 1) or a count."""
    from glmdata.split import stratum

    strata = bytearray(stratum(r["messages"]) for r in rows.rows)
    return split_positions(strata, rows.copies, eval_split, seed)


def split_positions(
    strata: bytearray, copies: dict[int, int], eval_split: float, seed: int
) -> tuple[list[int], list[int]]:
    """``split_rows`` on the rows' strata (``glmdata.split.stratum``) and duplicates (position -> first copy)."""
    from glmdata.split import choose_eval

    n = len(strata)
    if eval_split <= 0 or n < 2:
        return list(range(n)), []
    fraction = eval_split if eval_split < 1 else min(eval_split, n - 1) / n
    chosen = choose_eval(strata, fraction, seed, copies)
    return [i for i in range(n) if i not in chosen], sorted(chosen)


# --- model and tokenizer ---------------------------------------------------------------------


def resolve_model(name: str, console=None) -> str:
    """A local directory or hub id for ``--model``; a preset (``tiny-random``) is built on first use.

    A hub id is kept when the Hub answers (transformers downloads and caches it). When the Hub is
    off (``HF_HUB_OFFLINE``) or does not answer within seconds, it is the cached copy's directory,
    or an error saying how to get the model here: never a minute of retries.
    """
    from glmtrain import tiny

    if tiny.is_preset(name):
        return str(tiny.ensure_preset(name))
    if Path(name).expanduser().exists():
        return name
    if not _looks_like_hub_id(name):
        raise GlmtrainError(
            f"--model {name}: no such directory", "pass a model directory or a hub id such as THUDM/glm-4-9b-chat-hf"
        )
    why = hub_unreachable()
    if why is None:
        return name
    from huggingface_hub import snapshot_download

    try:
        cached = snapshot_download(name, local_files_only=True)
    except Exception:
        raise GlmtrainError(
            f"cannot load {name!r}: it is not a local directory, {why}, and there is no cached copy",
            offline_hint(name),
        ) from None
    if console is not None:
        console.print(f"[yellow]{escape(why)}:[/] using the cached copy of {escape(name)} in {escape(cached)}")
    return cached


HUB_PROBE_SECONDS = 3.0


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face Hub cannot be used now, or ``None`` when it answers.

    One request without retries (huggingface_hub retries a failing download for about a minute).
    """
    import huggingface_hub
    from huggingface_hub import constants

    if huggingface_hub.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        huggingface_hub.get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as e:
        return f"the Hugging Face Hub ({constants.ENDPOINT}) does not answer ({type(e).__name__})"
    return None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~", "/"))


def offline_hint(model: str) -> str:
    local = "./" + model.rstrip("/").split("/")[-1]
    return (
        f"download it where there is network (`hf download {model} --local-dir {local}`), copy the directory here "
        f"and pass --model {local} (a dry run needs only the tokenizer: --tokenizer DIR); "
        "--model tiny-random runs the whole pipeline with a tiny local model"
    )


def load_tokenizer(model: str):
    """The model's tokenizer, without loading any weights. Local directories go through glmdata
    (which also reads glm-4-9b-chat's original tiktoken files); hub ids (from ``resolve_model``,
    so the Hub answered) through transformers."""
    path = Path(model).expanduser()
    if path.exists():
        from glmdata.tokenizer import TokenizerError
        from glmdata.tokenizer import load_tokenizer as load_local

        try:
            return load_local(path)
        except TokenizerError as e:
            raise GlmtrainError(str(e)) from None
    if not _looks_like_hub_id(model):
        raise GlmtrainError(
            f"{model}: no such directory",
            "pass a tokenizer or model directory, or a hub id such as THUDM/glm-4-9b-chat-hf",
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model)
    except Exception as e:
        raise GlmtrainError(
            f"cannot load {model!r}: it is not a local directory and the Hugging Face Hub did not provide it "
            f"({type(e).__name__}; offline, or no cached copy)",
            offline_hint(model),
        ) from None


def resolve_dtype(name: str) -> str:
    """``auto``: bfloat16 on a GPU that has it, float16 on an older GPU, float32 on CPU."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


# --- template --------------------------------------------------------------------------------


@dataclass
class TemplateCheck:
    """How the model tokenizer's own chat template (what inference uses) compares with the training one."""

    status: str  # "same", "differs" or "missing"
    training_template: str
    rows_checked: int = 0
    row: int | None = None
    position: int | None = None
    line: int | None = None
    model_text: str | None = None
    training_text: str | None = None
    rows_from: str | None = None  # set when the rows checked are not the data's (tokenized files have none)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        if self.status == "missing":
            return "the model's tokenizer has no chat template"
        if self.status == "same":
            return f"same text on {plural(self.rows_checked, 'sample row')}"
        return (
            (f"{self.rows_from}, " if self.rows_from else "")
            + f"row {self.row}: first difference at character {self.position} (line {self.line})\n"
            f"  model tokenizer: {self.model_text!r}\n"
            f"  training ({self.training_template}): {self.training_text!r}"
        )


def training_template(cfg: TrainConfig, tokenizer):
    """The template glmdata renders the training rows with (``--template``)."""
    from glmdata.render import DEFAULT_TEMPLATE, Template, TemplateError, known_template, load_template

    if cfg.template == "glmdata":
        # the model's own template when it is one glmdata knows (glm-4-9b-chat ships two variants)
        own = getattr(tokenizer, "chat_template", None)
        known = known_template(own) if isinstance(own, str) else None
        return load_template(known or DEFAULT_TEMPLATE)
    if cfg.template == "model":
        if not tokenizer.chat_template:
            raise GlmtrainError(
                "--template model: the model's tokenizer has no chat template", "use --template glmdata"
            )
        return Template(tokenizer.chat_template, f"{cfg.model} tokenizer")
    try:
        return load_template(cfg.template)
    except TemplateError as e:
        raise GlmtrainError(f"--template: {e}") from None


def check_template(tokenizer, rows: Rows, template, samples: int) -> TemplateCheck:
    """Render sample rows with the tokenizer's chat template and with glmdata; report the first difference."""
    from glmdata.families import DEFAULT_FAMILY, family_of, template_input
    from glmdata.render import render

    if not tokenizer.chat_template:
        return TemplateCheck("missing", template.origin)
    family = family_of(template) or DEFAULT_FAMILY  # the input shape both templates read
    if tokenizer.chat_template == template.text:
        return TemplateCheck("same", template.origin, rows_checked=len(rows.rows))
    n = len(rows.rows)
    picks = sorted({round(i * (n - 1) / max(1, samples - 1)) for i in range(min(samples, n))})
    for k, i in enumerate(picks):
        messages = rows.rows[i]["messages"]
        # The last check of the first row is the inference prompt: the conversation up to an answer.
        variants = [(messages, False)] + ([(messages[:-1], True)] if k == 0 and len(messages) > 1 else [])
        for msgs, gen in variants:
            shaped = template_input({"messages": msgs}, family)
            try:
                model_text = tokenizer.apply_chat_template(
                    shaped["messages"], tools=shaped.get("tools"), tokenize=False, add_generation_prompt=gen
                )
            except Exception as e:
                model_text = f"<error: {type(e).__name__}: {e}>"
            ours = render(msgs, add_generation_prompt=gen, template=template)
            if model_text != ours:
                pos = next(
                    (j for j, (a, b) in enumerate(zip(model_text, ours)) if a != b), min(len(model_text), len(ours))
                )
                lo = max(0, pos - 30)
                return TemplateCheck(
                    "differs",
                    template.origin,
                    rows_checked=k + 1,
                    row=rows.indices[i],
                    position=pos,
                    line=ours.count("\n", 0, pos) + 1,
                    model_text=model_text[lo : pos + 40],
                    training_text=ours[lo : pos + 40],
                    rows_from=rows.path if rows.rows is PROBE_ROWS else None,
                )
    return TemplateCheck("same", template.origin, rows_checked=len(picks))


# --- tokenization and statistics -------------------------------------------------------------


def tokenize_rows(rows: Rows, tokenizer, *, train_on: TrainOn, template) -> list[dict[str, list[int]]]:
    """glmdata's ``input_ids`` / ``assistant_masks`` for every row, untruncated (statistics need full lengths)."""
    from glmdata.masks import MaskError, tokenize_batch
    from glmdata.render import TemplateError

    out: list[dict[str, list[int]]] = []
    chunk = 256
    for start in range(0, len(rows.rows), chunk):
        batch = [r["messages"] for r in rows.rows[start : start + chunk]]
        try:
            enc = tokenize_batch({"messages": batch}, tokenizer, train_on=train_on, template=template)
        except MaskError as e:
            raise GlmtrainError(f"{rows.path}: {e}") from None
        except (TemplateError, ValueError):
            row, error = _first_failure(rows, start, batch, tokenizer, train_on, template)
            raise DataProblem(f"{rows.path}: row {row}: {error}", "fix or drop the row") from None
        out.extend({"input_ids": ids, "assistant_masks": m} for ids, m in zip(enc["input_ids"], enc["assistant_masks"]))
    return out


def _first_failure(rows: Rows, start: int, batch, tokenizer, train_on, template) -> tuple[int, ValueError]:
    """The row number of the first row in a failed batch that fails alone, and its error."""
    from glmdata.masks import tokenize

    for j, messages in enumerate(batch):
        try:
            tokenize(messages, tokenizer, train_on=train_on, template=template)
        except ValueError as e:
            return rows.indices[start + j], e
    raise AssertionError("a batch failed but none of its rows does")  # pragma: no cover


def token_stats(part: Part | list[dict[str, list[int]]], max_length: int | None) -> dict[str, Any]:
    """Tokens, trained tokens, and what cutting every row to ``max_length`` loses, over the rows of
    ``part`` (or of a list of ``input_ids`` / ``assistant_masks``).

    SFTTrainer truncates to ``max_length`` (keeping the start) and drops rows left with no trained
    token; ``dropped_rows`` counts those (with a row of a tokenized file that was cut before with no
    trained token left).
    """
    from glmdata.stats import percentile

    if isinstance(part, list):
        encoded = part
        lengths, trained = [len(e["input_ids"]) for e in encoded], [sum(e["assistant_masks"]) for e in encoded]
        source = Source("", 1.0, [], lengths, trained, bytearray(), {}, None, encoded=encoded)
        part = Part([source], [(0, i) for i in range(len(encoded))])
    row_lengths, row_trained = part.lengths(), part.trained()
    lengths = sorted(row_lengths)
    stats: dict[str, Any] = {
        "rows": len(lengths),
        "tokens": sum(lengths),
        "trained_tokens": sum(row_trained),
        "tokens_per_row": {
            "p50": percentile(lengths, 50),
            "p90": percentile(lengths, 90),
            "max": lengths[-1] if lengths else 0,
        },
        "max_length": max_length,
        "truncated_rows": 0,
        "tokens_cut": 0,
        "trained_tokens_cut": 0,
        "dropped_rows": 0,
    }
    if max_length is not None:
        for n, t, cut in zip(row_lengths, row_trained, part.trained_after(max_length)):
            if n > max_length:
                stats["truncated_rows"] += 1
                stats["tokens_cut"] += n - max_length
                stats["trained_tokens_cut"] += cut
            if cut == t:  # nothing trained is left (for a row that is not cut: nothing was there)
                stats["dropped_rows"] += 1
    return stats


def choose_max_length(cfg: TrainConfig, longest: int) -> int | None:
    """``max_length``: as set, or for ``auto`` the longest row rounded up to 64, capped at ``max_length_cap``."""
    if cfg.max_length == "auto":
        return min(cfg.max_length_cap, max(64, math.ceil(longest / 64) * 64))
    return cfg.max_length


def warn_truncation(stats: dict[str, Any], console, label: str) -> None:
    if not stats["truncated_rows"]:
        return
    rows, trained = stats["rows"], max(1, stats["trained_tokens"])
    msg = (
        f"[bold red]warning:[/] max_length {stats['max_length']} cuts {stats['truncated_rows']} of "
        f"{plural(rows, label + ' row')} ({100 * stats['truncated_rows'] / rows:.1f}%) and "
        f"{stats['trained_tokens_cut']} of {plural(stats['trained_tokens'], 'trained token')} "
        f"({100 * stats['trained_tokens_cut'] / trained:.1f}%)"
    )
    if stats["dropped_rows"]:
        dropped = stats["dropped_rows"]
        msg += f"; {plural(dropped, 'row keeps', 'rows keep')} no trained token and {'is' if dropped == 1 else 'are'} dropped"
    msg += f". The longest row has {plural(stats['tokens_per_row']['max'], 'token')}: raise --max-length (or --max-length auto)."
    console.print(msg)


# --- data sources: files of messages and tokenized files, mixed by weights --------------------

# The template check needs conversations; a run on tokenized files alone has none, so it renders these.
PROBE_ROWS: list[Any] = [
    {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi! How can I help?"}]},
    {
        "messages": [
            {
                "role": "system",
                "content": "",
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "description": "Weather of a city",
                            "parameters": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                            },
                        },
                    }
                ],
            },
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "metadata": "get_weather", "content": '{"city": "Rome"}'},
            {"role": "observation", "content": '{"temp": 25}'},
            {"role": "assistant", "content": "25 degrees in Rome."},
        ]
    },
]
TOKENIZED_COLUMNS = ("input_ids", "assistant_masks", "row")  # what the trainer gets (labels follow from the masks)
SCAN_BATCH = 4096  # rows per batch when a tokenized file is read for its statistics


@dataclass
class Source:
    """One data file of the run, tokenized: a file of messages (validated and tokenized here), or a
    Parquet file written by ``glmdata tokenize`` (read as it is). Per row: its number in the file, its
    tokens, its trained tokens, its stratum for the held-out split; and the rows as a ``datasets.Dataset``
    (``input_ids``, ``assistant_masks``, ``row``), in memory for messages, memory-mapped for a file."""

    path: str
    weight: float
    indices: list[int]
    lengths: list[int]
    trained: list[int]
    strata: bytearray
    copies: dict[int, int]  # position of an exact duplicate -> position of its first copy
    dataset: Any
    rows: Rows | None = None  # a file of messages: the rows glmdata kept, and its report
    encoded: list[dict[str, list[int]]] | None = None
    made_with: Any = None  # a tokenized file: its glmdata.tokenized.Provenance

    @property
    def kind(self) -> str:
        return "messages" if self.rows is not None else "tokenized"

    @property
    def rejected(self) -> int | None:
        """Rows glmdata rejected (``None`` for a tokenized file: they were counted by ``glmdata tokenize``)."""
        return self.rows.report.rejected if self.rows is not None else None

    def trained_after(self, positions: list[int], max_length: int) -> list[int]:
        """Trained tokens past ``max_length`` in each of these rows."""
        if self.encoded is not None:
            return [sum(self.encoded[p]["assistant_masks"][max_length:]) for p in positions]
        out: list[int] = []
        masks = self.dataset.select_columns(["assistant_masks"]).select(positions)
        for batch in masks.iter(batch_size=1000):
            out.extend(sum(m[max_length:]) for m in batch["assistant_masks"])
        return out

    def report(self) -> dict[str, Any]:
        if self.rows is not None:
            return self.rows.report.to_dict()
        return {
            "source": self.path,
            "kind": "tokenized",
            "rows": len(self.indices),
            "made_with": asdict(self.made_with),
        }


def messages_source(rows: Rows, weight: float, encoded: list[dict[str, list[int]]]) -> Source:
    """A file of messages, tokenized by ``tokenize_rows``."""
    from glmdata.split import stratum

    return Source(
        rows.path,
        weight,
        list(rows.indices),
        [len(e["input_ids"]) for e in encoded],
        [sum(e["assistant_masks"]) for e in encoded],
        bytearray(stratum(r["messages"]) for r in rows.rows),
        dict(rows.copies),
        _dataset(encoded, rows.indices),
        rows=rows,
        encoded=encoded,
    )


def is_tokenized(path: str) -> bool:
    """Whether ``path`` is a tokenized file (Parquet with ``input_ids``) rather than rows of messages
    (any format glmdata reads, Parquet of messages included)."""
    if not str(path).lower().endswith(".parquet"):
        return False
    from glmdata import tokenized

    pa = _pyarrow(path)
    try:
        schema = pa.parquet.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise GlmtrainError(
            f"cannot read {path}: {e}", "check the path; a tokenized file comes from `glmdata tokenize`"
        ) from None
    return tokenized.METADATA_KEY in (schema.metadata or {}) or "input_ids" in schema.names


def _pyarrow(path: str) -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise GlmtrainError(f"{path}: Parquet files need pyarrow", "pip install 'glmdata[parquet]'") from None
    return pyarrow


def _template_arg(origin: str, tokenizer_path: str) -> str:
    """How to name the template of this origin to ``--template`` (of ``glmdata tokenize`` and ``glmtrain run``)."""
    if origin.startswith("glmdata:"):
        return origin.removeprefix("glmdata:")
    if origin.endswith(" tokenizer"):  # --template model
        return tokenizer_path
    return origin.removesuffix(":chat_template")


def check_tokenized(path: str, expected: Any, setting: Any, tokenizer_path: str) -> None:
    """Refuse a tokenized file made otherwise than this run tokenizes: with another tokenizer, template
    or ``train_on``, or cut at another ``max_length`` than ``setting`` (``--max-length``) allows.
    A file that was not cut trains with any ``max_length`` (the trainer cuts it as it cuts other rows)."""
    from glmdata import tokenized

    found = tokenized.read_provenance(path)
    if found is None:
        raise DataProblem(
            f"{path} holds input_ids but not glmdata's metadata ({tokenized.METADATA_KEY.decode()}): "
            "what it was tokenized with is unknown",
            f"make it with `glmdata tokenize DATA --tokenizer {tokenizer_path} -o {path}`, or train on the messages",
        )
    differs = [name for name in found.same_tokens_as(expected) if name != "max_length"]
    length_ok = found.max_length is None or setting == "auto" or setting == found.max_length
    if not differs and length_ok:
        return
    said = [f"{name}: the file has {_made(found, name)}, this run {_made(expected, name)}" for name in differs]
    if not length_ok:
        run_length = "no cut (--max-length none)" if setting is None else f"--max-length {setting}"
        said.append(f"max_length: the file was cut at {found.max_length} tokens, this run asks for {run_length}")
    again = (
        f"glmdata tokenize DATA --tokenizer {tokenizer_path} --template {_template_arg(expected.template_name, tokenizer_path)} "
        f"--train-on {expected.train_on}" + (f" --max-length {setting}" if isinstance(setting, int) else "")
    )
    match = []
    if "tokenizer" in differs:
        match.append(
            f"--tokenizer (or --model) with the tokenizer it was made with ({found.tokenizer_name or 'unnamed'})"
        )
    if "template" in differs:
        match.append(f"--template {_template_arg(found.template_name, tokenizer_path)}")
    if "train_on" in differs:
        match.append(f"--train-on {found.train_on}")
    if not length_ok:
        match.append(f"--max-length {found.max_length} (or auto)")
    raise DataProblem(
        f"{path} was tokenized with other settings than this run's ({'; '.join(said)}); it was made with the "
        f"tokenizer {found.tokenizer_name or 'unnamed'}, the template {found.template_name or 'unnamed'}, "
        f"--train-on {found.train_on} and "
        + ("no --max-length" if found.max_length is None else f"--max-length {found.max_length}")
        + "; nothing was loaded or trained",
        f"tokenize again with this run's settings ({again} -o {path}), or make the run match the file: "
        + ", ".join(match),
    )


def _made(made_with: Any, name: str) -> str:
    value = getattr(made_with, name)
    if name in ("tokenizer", "template"):
        origin = getattr(made_with, f"{name}_name")
        return f"{origin or 'unnamed'} (sha256 {value[:12]})"
    return repr(value)


def tokenized_max_length(files: list[tuple[str, Any]]) -> int | None:
    """The ``max_length`` tokenized files were cut at (``None`` when none was); files cut at different
    lengths do not train together."""
    cut = [(path, made.max_length) for path, made in files if made.max_length is not None]
    for path, length in cut[1:]:
        if length != cut[0][1]:
            raise DataProblem(
                f"{path} was cut at max_length {length} and {cut[0][0]} at {cut[0][1]}: one run trains at one length",
                "tokenize them again with the same --max-length (or none: the run then cuts them)",
            )
    return cut[0][1] if cut else None


def read_tokenized(path: str, weight: float, made_with: Any, tokenizer) -> Source:
    """A tokenized file as a ``Source``: one pass over its row groups for the statistics (memory: a few
    numbers per row), and a memory-mapped ``datasets.Dataset`` of its rows for the trainer.

    The held-out split has only the ids to go by: a row holding ``<|observation|>`` (a tool result) is a
    tool-call row, any other a plain one; rows with the same ids and masks are duplicates."""
    import hashlib

    import numpy as np
    from datasets import Dataset

    from glmdata.split import CALLS, PLAIN

    pa = _pyarrow(path)
    parquet = pa.parquet.ParquetFile(path)
    missing = [c for c in TOKENIZED_COLUMNS if c not in parquet.schema_arrow.names]
    if missing:
        raise DataProblem(f"{path}: no {', '.join(missing)} column", "make it with `glmdata tokenize`")
    observation = tokenizer.convert_tokens_to_ids("<|observation|>")
    if not isinstance(observation, int) or observation == tokenizer.unk_token_id:
        observation = -1  # no such token: every row is a plain one
    source = Source(path, weight, [], [], [], bytearray(), {}, None, made_with=made_with)
    first: dict[bytes, int] = {}
    for batch in parquet.iter_batches(batch_size=SCAN_BATCH, columns=list(TOKENIZED_COLUMNS)):
        ids, masks = batch.column("input_ids"), batch.column("assistant_masks")
        offsets = ids.offsets.to_numpy().astype(np.int64)
        offsets -= offsets[0]
        flat_ids = ids.flatten().to_numpy()
        flat_masks = masks.flatten().to_numpy().astype(np.int64)
        trained = np.concatenate([[0], np.cumsum(flat_masks)])
        calls = np.concatenate([[0], np.cumsum(flat_ids == observation)])
        starts, ends = offsets[:-1], offsets[1:]
        source.lengths.extend((ends - starts).tolist())
        source.trained.extend((trained[ends] - trained[starts]).tolist())
        source.strata.extend(CALLS if n else PLAIN for n in (calls[ends] - calls[starts]).tolist())
        source.indices.extend(batch.column("row").to_pylist())
        for a, b in zip(starts.tolist(), ends.tolist()):
            key = hashlib.blake2b(flat_ids[a:b].tobytes() + flat_masks[a:b].tobytes(), digest_size=16).digest()
            position = len(source.copies) + len(first)
            if key in first:
                source.copies[position] = first[key]
            else:
                first[key] = position
    if not source.indices:
        raise DataProblem(f"{path}: no rows to train on")
    source.dataset = Dataset.from_parquet(path, columns=list(TOKENIZED_COLUMNS))
    return source


def draw(positions: list[int], weight: float, rng: random.Random) -> list[int]:
    """The rows of a dataset in one epoch of the mix: each row ``int(weight)`` times, plus a seeded sample
    (without replacement) of the fraction left (``weight`` 1.5: every row once, and half of them again;
    0.5: half of them). Weight 1 is every row once, in order."""
    whole, part = int(weight), weight - int(weight)
    drawn = positions * whole
    if part:
        drawn += sorted(rng.sample(positions, round(part * len(positions))))
    return drawn


@dataclass
class Part:
    """Rows drawn from the sources, in order: (source number, position) pairs; a row may repeat."""

    sources: list[Source]
    picks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.picks)

    def lengths(self) -> list[int]:
        return [self.sources[k].lengths[p] for k, p in self.picks]

    def trained(self) -> list[int]:
        return [self.sources[k].trained[p] for k, p in self.picks]

    def subset(self, keep: list[int]) -> Part:
        return Part(self.sources, [self.picks[i] for i in keep])

    def by_source(self) -> dict[int, list[int]]:
        """Each source's positions, in the order they are picked."""
        out: dict[int, list[int]] = {}
        for k, p in self.picks:
            out.setdefault(k, []).append(p)
        return out

    def trained_after(self, max_length: int) -> list[int]:
        """Trained tokens past ``max_length`` in each picked row (0 for rows that are not longer)."""
        out = [0] * len(self.picks)
        where: dict[int, list[int]] = {}
        for i, (k, p) in enumerate(self.picks):
            if self.sources[k].lengths[p] > max_length:
                where.setdefault(k, []).append(i)
        for k, picked in where.items():
            cuts = self.sources[k].trained_after([self.picks[i][1] for i in picked], max_length)
            for i, cut in zip(picked, cuts):
                out[i] = cut
        return out

    def rows(self) -> Rows | None:
        """The picked rows that have messages (predictions need them), or ``None``."""
        picked = [(self.sources[k], p) for k, p in self.picks if self.sources[k].rows is not None]
        if not picked:
            return None
        first = picked[0][0].rows
        assert first is not None
        return Rows(
            first.path,
            [s.rows.rows[p] for s, p in picked if s.rows],
            [s.rows.indices[p] for s, p in picked if s.rows],
            first.report,
        )

    def dataset(self, *, label_sources: bool = False):
        """The picked rows as one ``datasets.Dataset`` (``label_sources``: with a ``dataset`` column, the
        source's number, when several datasets are mixed)."""
        from datasets import concatenate_datasets

        parts = []
        for k, positions in self.by_source().items():
            part = self.sources[k].dataset
            if positions != list(range(len(part))):
                part = part.select(positions)
            if label_sources:
                part = part.add_column("dataset", [k] * len(positions))
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        features = parts[0].features
        return concatenate_datasets([p if p.features == features else p.cast(features) for p in parts])


# --- settings checked before the data is read ------------------------------------------------


def check_settings(cfg: TrainConfig, console=None) -> tuple[str | None, str | None]:
    """Every check of the settings that needs neither data nor weights, made before validation and
    tokenization (a dry run makes them too): the launcher, the SwanLab login, ``--resume``,
    ``--load-in-4bit``, ``--deepspeed`` and the ``sft:`` keys. Returns the SwanLab mode and the
    checkpoint to resume from."""
    from glmtrain.callbacks import tracker_mode

    check_launcher(os.environ)
    cfg.data_weights()  # one weight per data file
    mode = tracker_mode(cfg.tracker)
    resume = resolve_resume(cfg, console)
    if cfg.load_in_4bit:
        check_4bit_possible()
    check_deepspeed(cfg)
    check_sft_keys(cfg)
    return mode, resume


def check_launcher(environ: Mapping[str, str]) -> None:
    """Stop when ``accelerate launch --cpu --num_processes N`` started one process instead of N.

    accelerate's ``--cpu`` launcher runs the script once (several CPU processes go through mpirun
    and ``--mpirun_hostfile``); it still sets ``MASTER_ADDR`` when more processes were asked for.
    """
    on_cpu = environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    launched = any(name in environ for name in (*WORLD_SIZE_VARIABLES, "LOCAL_RANK"))
    if on_cpu and "MASTER_ADDR" in environ and not launched:
        raise GlmtrainError(
            "accelerate launch --cpu started 1 process: it starts more only through mpirun (--mpirun_hostfile), "
            "so the processes asked for with --num_processes are not there",
            "on one machine run torchrun --standalone --nproc_per_node N -m glmtrain run ..., or accelerate launch "
            "--multi_gpu --num_processes N -m glmtrain run ... (it starts the processes with torchrun; without a "
            "GPU they train on the CPU, with gloo)",
        )


def check_deepspeed(cfg: TrainConfig) -> None:
    if not cfg.deepspeed:
        return
    import importlib.util

    path = _deepspeed_config(cfg.deepspeed)
    if path is None or not Path(path).is_file():
        raise GlmtrainError(f"--deepspeed {cfg.deepspeed}: no such file", "use zero2, zero3 or a DeepSpeed JSON file")
    if importlib.util.find_spec("deepspeed") is None:
        raise GlmtrainError(
            "--deepspeed needs the deepspeed package, which is not installed",
            "pip install deepspeed (on the GPU machine), or drop --deepspeed",
        )


def check_sft_keys(cfg: TrainConfig) -> None:
    """Every ``sft.KEY`` must be a field of TRL's ``SFTConfig``."""
    if not cfg.sft:
        return
    from trl import SFTConfig

    known = sorted(f.name for f in dataclasses.fields(SFTConfig) if f.init and not f.name.startswith("_"))
    for key in cfg.sft:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise GlmtrainError(
                f"{cfg.sft_source(key)}: sft.{key} is not an SFTConfig field",
                (f"did you mean sft.{close[0]}? " if close else "") + "SFTConfig's fields: " + ", ".join(known),
            )


# --- the plan --------------------------------------------------------------------------------

# the launchers' process count, as accelerate reads it (torchrun and accelerate, then MPI)
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# a fraction of the run (--eval-steps 0.1) is never fewer steps than this between evaluations or
# checkpoints (at most the whole run): a 5-step smoke run evaluates and saves once, at the end
MIN_STEPS_BETWEEN_CHECKPOINTS = 10
EVAL_ROWS = 200  # --eval-rows auto evaluates at most this many held-out rows


def launched_processes() -> int:
    """How many processes the launcher started (1 without one)."""
    return _int_from_env(WORLD_SIZE_VARIABLES, 1)


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launcher (or the only one): the one that writes and speaks."""
    return _int_from_env(RANK_VARIABLES, 0) == 0


def _int_from_env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().lstrip("-").isdigit():
            return int(value)
    return default


@dataclass
class Prepared:
    """Everything decided before weights load: the data sources, the rows drawn for training and
    evaluation, datasets, statistics, the plan, and the trainer's arguments (TRL's ``SFTConfig``,
    built and so checked)."""

    cfg: TrainConfig
    model_path: str | None  # None: a dry run with --tokenizer does not look for the model
    tokenizer: Any
    template: Any
    template_check: TemplateCheck
    sources: list[Source]  # the training data files, in order
    eval_source: Source | None  # --eval-data
    train_part: Part  # the rows of one epoch of training (the mix)
    eval_part: Part | None  # the held-out rows evaluated during training (at most --eval-rows)
    eval: Rows | None  # those of them that have messages: the prompts of the predictions
    train_dataset: Any
    eval_dataset: Any
    held_out: int = 0  # all the held-out rows
    held_part: Part | None = None  # all of them
    plan: dict[str, Any] = field(default_factory=dict)
    args: Any = None


def prepare(cfg: TrainConfig, console, *, need_model: bool = True) -> Prepared:
    """Validate, check the template, tokenize (or check the tokenized files), split, mix and plan; build
    the ``SFTConfig``. Loads no weights. With ``cfg.tokenizer`` and ``need_model=False`` (a dry run) the
    model is not looked for."""
    from glmdata import tokenized

    files, weights = cfg.data_files(), cfg.data_weights()
    if not files:
        raise GlmtrainError("no data: give DATA.jsonl (or `data:` in the config)", "glmtrain run DATA.jsonl")
    paths = files + ([cfg.eval_data] if cfg.eval_data else [])
    pretokenized = {i: is_tokenized(path) for i, path in enumerate(paths)}
    rows = {
        i: read_rows(path, skip_invalid=cfg.skip_invalid, console=console)
        for i, path in enumerate(paths)
        if not pretokenized[i]
    }

    model_path = resolve_model(cfg.model, console) if need_model or not cfg.tokenizer else None
    tokenizer_path = resolve_model(cfg.tokenizer, console) if cfg.tokenizer else model_path
    assert tokenizer_path is not None
    tokenizer = load_tokenizer(tokenizer_path)
    template = training_template(cfg, tokenizer)
    # the rows of the first file with messages; tokenized files alone have none, so probe conversations
    sample = next(iter(rows.values()), None) or Rows("glmtrain's probe conversations", PROBE_ROWS, [0, 1], None)
    check = check_template(tokenizer, sample, template, cfg.template_samples)
    if check.status == "differs" and not cfg.allow_template_mismatch:
        from glmdata.render import KNOWN_TEMPLATES, known_template

        own = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        unknown = "" if known_template(own) else " (not a template glmdata knows)"
        raise DataProblem(
            f"the model tokenizer's chat template{unknown} (used at inference) renders the data differently "
            f"from the training template ({template.origin}):\n{check.describe()}",
            f"pass --template NAME for the model's family (glmdata knows {', '.join(KNOWN_TEMPLATES)}), "
            "--template model to train with the model's own template, or --allow-template-mismatch to train "
            "with this one (the saved tokenizer then carries it, so inference matches training)",
        )
    if check.status != "same":
        console.print(
            f"[yellow]template:[/] {escape(check.describe())}; "
            + (
                "the saved tokenizer will carry the training template"
                if cfg.save_template
                else "keeping the model's template (--keep-model-template)"
            )
        )

    batching = choose_batching(cfg, read_model_config(model_path or cfg.model, download=model_path is not None))

    # tokenized files made otherwise are refused before anything is tokenized
    provenances = {}
    if any(pretokenized.values()):
        try:
            expected = tokenized.provenance(tokenizer, template, cfg.train_on, None, tokenizer_name=tokenizer_path)
        except AttributeError:
            raise GlmtrainError(
                f"{tokenizer_path}: not a fast tokenizer, so tokenized files cannot be checked against it",
                "train on the messages instead",
            ) from None
        for i in (i for i, is_file in pretokenized.items() if is_file):
            check_tokenized(paths[i], expected, cfg.max_length, tokenizer_path)
            provenances[i] = tokenized.read_provenance(paths[i])
    cut_at = tokenized_max_length([(paths[i], p) for i, p in provenances.items()])

    sources: list[Source] = []
    for i, path in enumerate(paths):
        weight = weights[i] if i < len(files) else 1.0
        if pretokenized[i]:
            sources.append(read_tokenized(path, weight, provenances[i], tokenizer))
        else:
            encoded = tokenize_rows(rows[i], tokenizer, train_on=cfg.train_on, template=template)
            sources.append(messages_source(rows[i], weight, encoded))
    eval_source = sources.pop() if cfg.eval_data else None

    # held out: each dataset's own stratified split, unless --eval-data
    if eval_source is None:
        eval_split = cfg.eval_split
        total = sum(len(s.indices) for s in sources)
        if eval_split >= 1 and len(sources) > 1:  # a count of rows over all datasets, shared by their size
            eval_split = min(eval_split, total - 1) / total
        splits = [split_positions(s.strata, s.copies, eval_split, cfg.seed) for s in sources]
        held = Part(sources, [(k, p) for k, (_, ev) in enumerate(splits) for p in ev])
        train_positions = [tr for tr, _ in splits]
    else:
        held = Part([*sources, eval_source], [(len(sources), p) for p in range(len(eval_source.indices))])
        train_positions = [list(range(len(s.indices))) for s in sources]
    mix = Part(
        sources,
        [
            (k, p)
            for k, s in enumerate(sources)
            for p in draw(train_positions[k], s.weight, random.Random(f"glmtrain mix {cfg.seed} {k}"))
        ],
    )
    if not mix.picks:
        raise DataProblem("no rows left to train on after holding rows out", "lower --eval-split")
    held_out = len(held)

    longest = max(mix.lengths() + held.lengths())
    max_length = cut_at if cut_at is not None else choose_max_length(cfg, longest)
    if cut_at is not None and cfg.max_length == "auto":
        console.print(f"max_length {cut_at}: the length the tokenized data was cut at")
    stats = token_stats(mix, max_length)
    warn_truncation(stats, console, "training")
    if stats["dropped_rows"] == stats["rows"]:
        raise DataProblem(
            f"max_length {max_length} leaves no training row with a trained token",
            f"raise --max-length (the longest row has {plural(longest, 'token')}) or use --max-length auto",
        )
    steps = schedule(cfg, stats, max_length, has_eval=bool(held.picks))
    limit = eval_rows_limit(cfg, steps)
    eval_part: Part | None = held if held.picks else None
    if eval_part is not None and limit and held_out > limit:
        # evaluation during training reads a seeded sample of the held-out rows
        eval_part = held.subset(sorted(random.Random(cfg.seed).sample(range(held_out), limit)))
    eval_stats = token_stats(eval_part, max_length) if eval_part is not None else None
    if eval_stats:
        warn_truncation(eval_stats, console, "held-out")
        if eval_stats["dropped_rows"] == eval_stats["rows"]:
            console.print("[yellow]no held-out row keeps a trained token at this max_length: evaluation is off[/]")
            eval_part, eval_stats = None, None
            steps = schedule(cfg, stats, max_length, has_eval=False)

    train_dataset = mix.dataset(label_sources=len(sources) > 1)
    eval_dataset = eval_part.dataset() if eval_part is not None else None
    eval_rows = eval_part.rows() if eval_part is not None else None
    prep = Prepared(
        cfg, model_path, tokenizer, template, check, sources, eval_source, mix, eval_part, eval_rows,
        train_dataset, eval_dataset, held_out, held,
    )  # fmt: skip
    prep.plan = make_plan(prep, stats, eval_stats, longest, max_length, steps, batching)
    if batching["mode"] == "padding-free" and max_length is not None:
        # TRL does not cut padding-free rows: cut them here as it cuts padded ones (same ids, same labels)
        keep_end = cfg.sft.get("truncation_mode") == "keep_end"
        if stats["truncated_rows"] or stats["dropped_rows"]:
            prep.train_dataset = cut_rows(prep.train_dataset, max_length, keep_end=keep_end)
        if eval_stats and (eval_stats["truncated_rows"] or eval_stats["dropped_rows"]):
            prep.eval_dataset = cut_rows(prep.eval_dataset, max_length, keep_end=keep_end)
    note = prep.plan["predictions"].get("off")
    if note and cfg.num_predictions > 0 and eval_part is not None:
        console.print(f"[yellow]predictions:[/] {escape(note)}")
    prep.args = sft_config(cfg, prep)
    world = prep.plan["steps"]["processes"]
    if prep.args.world_size != world:
        raise GlmtrainError(
            f"the launcher started {plural(world, 'process', 'processes')} but the trainer sees "
            f"{prep.args.world_size} ({prep.args.parallel_mode.value}): they would not train together",
            "launch with torchrun or accelerate launch (see `glmtrain run` in the README), "
            "and do not set sft.use_cpu against the machine",
        )
    return prep


def _dataset(encoded: list[dict[str, list[int]]], indices: list[int]):
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [e["input_ids"] for e in encoded],
            "assistant_masks": [e["assistant_masks"] for e in encoded],
            "row": indices,  # the row's number in the data file; the trainer drops unused columns
        }
    )


def steps_between(value: float, total: int, *, at_least: int = 1) -> int:
    """Steps between two evaluations, checkpoints or logs: ``value`` steps, or below 1 that fraction of
    the run (but ``at_least`` steps); never more than the run."""
    steps = int(value) if value >= 1 else max(1, math.ceil(total * value), at_least)
    return max(1, min(steps, total))


def schedule(cfg: TrainConfig, stats: dict[str, Any], max_length: int | None, *, has_eval: bool) -> dict[str, Any]:
    """Steps, batch and the steps of evaluations, checkpoints and logs, as the trainer will run them."""
    world = launched_processes()
    examples = stats["rows"] - stats["dropped_rows"]
    if cfg.packing and max_length:
        # best-fit packing fills max_length blocks; the count is an estimate
        examples = max(1, math.ceil((stats["tokens"] - stats["tokens_cut"]) / max_length))
    batches = math.ceil(examples / (cfg.batch_size * world))
    steps_per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_epochs * steps_per_epoch)
    save_every = steps_between(cfg.save_steps, total, at_least=MIN_STEPS_BETWEEN_CHECKPOINTS)
    eval_every = steps_between(cfg.eval_steps, total, at_least=MIN_STEPS_BETWEEN_CHECKPOINTS) if has_eval else None
    return {
        "total": total,
        "per_epoch": steps_per_epoch,
        "epochs": round(total / steps_per_epoch, 2),
        "examples_per_epoch": examples,
        "packing_estimate": bool(cfg.packing),
        "effective_batch": cfg.batch_size * cfg.gradient_accumulation_steps * world,
        "batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "processes": world,
        "eval_every": eval_every,
        # no evaluation before the first checkpoint (the trainer's eval_delay); the trainer also
        # evaluates and saves at the last step
        "first_eval": min(total, math.ceil(save_every / eval_every) * eval_every) if eval_every else None,
        "save_every": save_every,
        "log_every": steps_between(cfg.logging_steps, total),
        "log_first_step": True,
    }


def eval_rows_limit(cfg: TrainConfig, steps: dict[str, Any]) -> int | None:
    """How many held-out rows an evaluation reads (``None``: all). ``--eval-rows auto``: at most
    ``EVAL_ROWS`` and no more than the rows trained between two evaluations, so evaluating never
    takes longer than the training it measures (a 5-step smoke run evaluates 10 rows, not 100)."""
    if cfg.eval_rows != "auto":
        return cfg.eval_rows or None
    if not steps["eval_every"]:
        return None
    return min(EVAL_ROWS, steps["eval_every"] * steps["effective_batch"])


def make_plan(
    prep: Prepared,
    stats,
    eval_stats,
    longest: int,
    max_length: int | None,
    steps: dict[str, Any],
    batching: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = prep.cfg
    has_eval = prep.eval_dataset is not None
    files = cfg.data_files()
    return {
        "data": files[0] if len(files) == 1 else files,
        "datasets": dataset_table(prep),
        "model": cfg.model,
        "model_path": prep.model_path,
        "tokenizer": cfg.tokenizer,
        "rows": {
            "valid": sum(len(s.indices) for s in prep.sources),
            "left_out": sum(s.rejected or 0 for s in prep.sources),
            "train": len(prep.train_part),
            "held_out": prep.held_out if has_eval else 0,
            "eval": len(prep.eval_part) if prep.eval_part is not None and has_eval else 0,
            "eval_rows": cfg.eval_rows,
        },
        "tokens": stats,
        "eval_tokens": eval_stats,
        "max_length": {"value": max_length, "setting": cfg.max_length, "longest_row": longest},
        "steps": steps,
        "batching": batching or choose_batching(cfg, None),
        "predictions": predictions_plan(prep),
        "lora": {
            "r": cfg.lora_r,
            "alpha": cfg.lora_alpha,
            "dropout": cfg.lora_dropout,
            "target_modules": cfg.lora_target_modules,
        },
        "learning_rate": cfg.learning_rate,
        "template": prep.template_check.to_dict(),
        "tracker": cfg.tracker,
        "output_dir": cfg.output_dir,
    }


def dataset_table(prep: Prepared) -> list[dict[str, Any]]:
    """Per training file: its rows, rows rejected, tokens, the rows trained and held out, its weight, and
    its share of one epoch of the mix (of the rows, and of the trained tokens)."""
    drawn = Counter(k for k, _ in prep.train_part.picks)
    trained_drawn: Counter[int] = Counter()
    for (k, _), t in zip(prep.train_part.picks, prep.train_part.trained()):
        trained_drawn[k] += t
    held = Counter(k for k, _ in prep.held_part.picks) if prep.held_part is not None else Counter()
    rows_total, trained_total = max(1, len(prep.train_part)), max(1, sum(trained_drawn.values()))
    return [
        {
            "path": s.path,
            "kind": s.kind,
            "rows": len(s.indices),
            "rejected": s.rejected,
            "tokens": sum(s.lengths),
            "trained_tokens": sum(s.trained),
            "held_out": held[k],
            "weight": s.weight,
            "train": drawn[k],
            "share": round(drawn[k] / rows_total, 4),
            "trained_share": round(trained_drawn[k] / trained_total, 4),
            "made_with": asdict(s.made_with) if s.made_with is not None else None,
        }
        for k, s in enumerate(prep.sources)
    ]


def predictions_plan(prep: Prepared) -> dict[str, Any]:
    """How many held-out rows the predictions can come from, and why there are none when there are none:
    a tokenized file holds ids, not the messages a prompt is made of."""
    evaluated = prep.eval_part is not None and prep.eval_dataset is not None
    rows = len(prep.eval.rows) if prep.eval is not None and evaluated else 0
    plan: dict[str, Any] = {"rows": rows, "per_evaluation": min(rows, prep.cfg.num_predictions)}
    if evaluated and not rows:
        assert prep.eval_part is not None
        paths = sorted({prep.eval_part.sources[k].path for k, _ in prep.eval_part.picks})
        plan["off"] = (
            f"off: the held-out rows come from {', '.join(paths)}, token ids without the messages a prompt is "
            "made of; evaluation loss is measured, but no answers are generated. For predictions, pass "
            "--eval-data with messages (the JSONL the file was tokenized from, or a held-out part of it)"
        )
    elif evaluated and rows < len(prep.eval_part or []):
        plan["note"] = f"from the {plural(rows, 'held-out row')} with messages (rows of tokenized files have none)"
    return plan


def _every(steps: int) -> str:
    return "every step" if steps == 1 else f"every {steps} steps"


def print_plan(plan: dict[str, Any], console) -> None:
    from rich.table import Table

    t, s, r = plan["tokens"], plan["steps"], plan["rows"]
    per_row = t["tokens_per_row"]
    table = Table(show_header=False, title="glmtrain plan", title_justify="left")
    datasets = plan.get("datasets") or []
    several = len(datasets) > 1
    where = plural(len(datasets), "dataset") if several else str(plan["data"])
    if not several and datasets and datasets[0]["kind"] == "tokenized":
        where += " (tokenized)"
    data = f"{where}: {plural(r['train'], 'row')} to train on" + (" per epoch" if several else "")
    data += f", {r['held_out']} held out"
    if r["eval"] != r["held_out"]:
        data += f" ({r['eval']} evaluated, --eval-rows {r['eval_rows']})"
    if r["left_out"]:
        data += f" ({plural(r['left_out'], 'invalid row')} left out)"
    table.add_row("data", data)
    for number, d in enumerate(datasets if several else [], 1):
        table.add_row(f"dataset {number}", describe_dataset(d))
    table.add_row("model", plan["model"] + (f" (tokenizer: {plan['tokenizer']})" if plan.get("tokenizer") else ""))
    table.add_row(
        "tokens",
        f"{t['tokens']} ({t['trained_tokens']} trained, {100 * t['trained_tokens'] / max(1, t['tokens']):.1f}%); "
        f"per row p50 {per_row['p50']}, p90 {per_row['p90']}, max {per_row['max']}",
    )
    ml = plan["max_length"]
    table.add_row(
        "max_length",
        f"{ml['value']} ({'auto: longest row ' + str(ml['longest_row']) if ml['setting'] == 'auto' else 'set'}); "
        f"{plural(t['truncated_rows'], 'row')} truncated, {plural(t['trained_tokens_cut'], 'trained token')} cut, "
        f"{plural(t['dropped_rows'], 'row')} dropped",
    )
    epochs = s["epochs"]
    table.add_row(
        "steps",
        f"{plural(s['total'], 'step')} ({s['per_epoch']} per epoch, {epochs:g} epoch{'' if epochs == 1 else 's'}); "
        f"effective batch {s['effective_batch']} = {s['batch_size']} x {s['gradient_accumulation_steps']} "
        f"accumulation x {plural(s['processes'], 'process', 'processes')}",
    )
    if plan.get("batching"):
        table.add_row("batching", plan["batching"]["reason"])
    at_end = f"at the end (step {s['total']})"
    if s["eval_every"]:
        when = at_end if s["first_eval"] >= s["total"] else f"{_every(s['eval_every'])} from step {s['first_eval']}"
        table.add_row("evaluation", f"{when} on {plural(r['eval'], 'row')}")
    else:
        table.add_row("evaluation", "none (no held-out rows)")
    table.add_row("checkpoints", at_end if s["save_every"] >= s["total"] else f"{_every(s['save_every'])}")
    table.add_row("logging", f"step 1, then {_every(s['log_every'])}")
    lora = plan["lora"]
    table.add_row(
        "LoRA",
        f"r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']} on {', '.join(lora['target_modules'])}; "
        f"lr {plan['learning_rate']}",
    )
    predictions = plan.get("predictions") or {}
    if predictions.get("off"):
        table.add_row("predictions", predictions["off"])
    table.add_row("template", plan["template"]["status"])
    table.add_row("output", plan["output_dir"])
    console.print(table)


def describe_dataset(d: dict[str, Any]) -> str:
    """One dataset of the plan: what it holds, and its share of the mix."""
    rejected = "tokenized" if d["rejected"] is None else f"{d['rejected']} rejected"
    return (
        f"{d['path']} ({plural(d['rows'], 'row')}, {rejected}): {d['tokens']} tokens ({d['trained_tokens']} trained), "
        f"{d['held_out']} held out; weight {d['weight']:g}: {plural(d['train'], 'row')} per epoch, "
        f"{100 * d['share']:.1f}% of the mix ({100 * d['trained_share']:.1f}% of its trained tokens)"
    )


# --- batching --------------------------------------------------------------------------------

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")
# transformers' mask builders (masking_utils): with no attention_mask and no cache, they cut the causal
# mask into one block per sequence where position_ids start again at 0
MASK_BUILDERS = ("create_causal_mask", "create_sliding_window_causal_mask", "create_chunked_causal_mask")


def read_model_config(model: str | None, *, download: bool) -> dict[str, Any] | None:
    """The model's ``config.json`` (no weights): from a local directory, else for a hub id the Hub's
    (``download``) or the cached copy; ``None`` where there is none."""
    from glmtrain import tiny

    if model is None:
        return None
    if tiny.is_preset(model):
        return {"model_type": "glm"}  # what tiny.build_model makes: a GlmForCausalLM
    path: Any = Path(model).expanduser() / "config.json"
    if not Path(model).expanduser().exists():
        if not _looks_like_hub_id(model):
            return None
        try:
            if download:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(model, "config.json")
            else:
                from huggingface_hub import try_to_load_from_cache

                path = try_to_load_from_cache(model, "config.json")
        except Exception:
            return None
        if not isinstance(path, str):
            return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def masks_from_position_ids(config: dict[str, Any] | None, init: dict[str, Any]) -> tuple[bool, str]:
    """Whether the model keeps rows laid end to end in one sequence apart (padding-free is then exact),
    and what it does: a model of transformers' own whose code builds its masks with ``masking_utils``
    (GLM-4 ``-hf``: glm, glm4, glm4_moe), or that runs flash attention, takes each row's bounds from
    ``position_ids``; remote code (``THUDM/glm-4-9b-chat``, model type chatglm) builds its own masks
    and would attend across the rows. ``init``: the ``model_init_kwargs`` the weights load with."""
    if config is None:
        return False, "the model's config.json was not read (a dry run without the model)"
    import importlib

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, model_type_to_module_name

    model_type = str(config.get("model_type") or "unknown")
    if model_type not in CONFIG_MAPPING_NAMES or (config.get("auto_map") and init.get("trust_remote_code")):
        return False, f"remote-code model {model_type} builds its own masks"
    attention = (
        init.get("attn_implementation") or config.get("attn_implementation") or config.get("_attn_implementation")
    )
    if attention in FLASH_ATTENTION:
        return True, f"{attention} takes each row's bounds from position_ids ({model_type})"
    name = model_type_to_module_name(model_type)
    try:
        module = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    except ImportError:
        return False, f"transformers has no modeling code for {model_type} here"
    if any(hasattr(module, builder) for builder in MASK_BUILDERS):
        return True, f"the model builds its attention masks from position_ids ({model_type})"
    return False, f"{model_type} builds its attention masks without position_ids"


def choose_batching(cfg: TrainConfig, config: dict[str, Any] | None) -> dict[str, Any]:
    """How the rows of a batch are laid out, and why: ``padding-free`` (end to end in one row, with
    ``position_ids``; no padding computed), ``padded`` (each row padded to the batch's longest: TRL's
    default) or ``packing``. Auto (``padding_free`` None): padding-free when the model keeps the rows
    apart (``masks_from_position_ids``) and a batch holds more than one row. ``--padding-free`` on a
    model that would attend across the rows is refused."""
    exact, what = masks_from_position_ids(config, cfg.sft.get("model_init_kwargs") or {})
    setting = cfg.padding_free
    if cfg.packing:
        if setting is False:
            raise GlmtrainError(
                "--packing lays the packed rows end to end (padding-free): it cannot go with --no-padding-free",
                "drop --packing (rows are then padded) or --no-padding-free",
            )
        if not exact and config is not None:
            raise GlmtrainError(
                f"--packing: {what}, so the rows packed into one block would attend to each other",
                "drop --packing; with a GLM-4 model use THUDM/glm-4-9b-chat-hf (transformers' own code)",
            )
        return {"mode": "packing", "setting": setting, "reason": "packing: rows packed into max_length blocks"}
    if setting is False:
        return {"mode": "padded", "setting": setting, "reason": "padded: --no-padding-free"}
    if setting is True:
        if not exact and config is not None:
            raise GlmtrainError(
                f"--padding-free: {what}, so the rows laid end to end in a batch would attend to each other",
                "drop --padding-free (the rows are then padded); with a GLM-4 model use THUDM/glm-4-9b-chat-hf "
                "(transformers' own code), or load it with flash attention "
                "(--set sft.model_init_kwargs.attn_implementation=flash_attention_2)",
            )
        reason = f"padding-free (--padding-free): {what}" + (
            "; batch size 1 gains nothing" if cfg.batch_size == 1 else ""
        )
        return {"mode": "padding-free", "setting": setting, "reason": reason}
    if not exact:
        return {"mode": "padded", "setting": setting, "reason": f"padded: {what}"}
    if cfg.batch_size == 1:
        return {"mode": "padded", "setting": setting, "reason": "padded: batch size 1 (nothing to pad)"}
    return {"mode": "padding-free", "setting": setting, "reason": f"padding-free: {what}"}


def cut_rows(dataset, max_length: int, *, keep_end: bool = False):
    """The rows cut to ``max_length`` tokens and those left with no trained token dropped, as TRL does to
    padded rows (it leaves padding-free ones whole): the same ids and labels either way."""
    part = slice(-max_length, None) if keep_end else slice(None, max_length)

    def cut(batch: dict[str, list]) -> dict[str, list]:
        return {
            "input_ids": [ids[part] for ids in batch["input_ids"]],
            "assistant_masks": [m[part] for m in batch["assistant_masks"]],
        }

    dataset = dataset.map(cut, batched=True, desc="Truncating (padding-free)")
    return dataset.filter(lambda batch: [1 in m for m in batch["assistant_masks"]], batched=True)


# --- training --------------------------------------------------------------------------------


def has_accelerator() -> bool:
    """Whether torch has a GPU (or another accelerator) to train on."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def _deepspeed_config(value: str | None) -> str | None:
    if value in ("zero2", "zero3"):
        return str(ACCELERATE_DIR / f"ds_{value}.json")
    return value


def sft_config(cfg: TrainConfig, prep: Prepared):
    """TRL's ``SFTConfig`` for this run, with the plan's steps; ``cfg.sft`` passes any other field through."""
    from trl import SFTConfig

    dtype = resolve_dtype(cfg.dtype)
    steps = prep.plan["steps"]
    has_eval = prep.eval_dataset is not None
    padding_free = prep.plan["batching"]["mode"] == "padding-free"
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        logging_steps=steps["log_every"],
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=steps["eval_every"] if has_eval else None,
        eval_delay=steps["save_every"] if has_eval else 0,  # no evaluation before the first checkpoint
        save_strategy="steps",
        save_steps=steps["save_every"],
        save_total_limit=cfg.save_total_limit,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        # Without a GPU the trainer must be told it runs on the CPU: otherwise, under torchrun, accelerate
        # finds no device backend and each process trains alone on the same rows (DistributedType.NO).
        use_cpu=not has_accelerator(),
        # every LoRA weight takes part in the forward pass: DDP need not look for unused ones each step
        ddp_find_unused_parameters=False,
        # padding-free rows are cut to max_length by prepare (TRL cuts only padded or packed ones)
        max_length=None if padding_free else prep.plan["max_length"]["value"],
        packing=cfg.packing,
        padding_free=padding_free,
        seed=cfg.seed,
        report_to="none",  # SwanLab is added as a callback with a mode that never prompts
        run_name=cfg.run_name,
        deepspeed=_deepspeed_config(cfg.deepspeed),
        model_init_kwargs={"dtype": dtype},
    )
    # transformers renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    kwargs["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = (
        cfg.gradient_checkpointing
    )
    kwargs.update(cfg.sft)
    try:
        return SFTConfig(**kwargs)
    except (TypeError, ValueError, ImportError) as e:
        raise GlmtrainError(
            f"invalid training settings: {e}".splitlines()[0], "check the sft: section and the flags"
        ) from None


def build_trainer(prep: Prepared, callbacks: list | None = None):
    """An ``SFTTrainer`` for the prepared run (loads the weights)."""
    from peft import LoraConfig
    from trl import SFTTrainer

    cfg, args = prep.cfg, prep.args
    model_path = prep.model_path or resolve_model(cfg.model)
    quantization_config = None
    if cfg.load_in_4bit:
        quantization_config = _quantization_config(resolve_dtype(cfg.dtype))
        # a 4-bit model is not moved after loading: each process loads it onto its own GPU (what TRL's
        # get_kbit_device_map did; TRL 1.x dropped it)
        args.model_init_kwargs["device_map"] = {"": args.local_process_index}
    peft_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        return SFTTrainer(
            model=model_path,
            args=args,
            train_dataset=prep.train_dataset,
            eval_dataset=prep.eval_dataset,
            processing_class=prep.tokenizer,
            peft_config=peft_config,
            quantization_config=quantization_config,
            callbacks=callbacks,
        )
    except OSError as e:
        raise GlmtrainError(
            f"cannot load the weights of {cfg.model!r}: {e}".splitlines()[0], offline_hint(cfg.model)
        ) from None
    except ValueError as e:
        if "Target module" in str(e) or "target_modules" in str(e):
            raise GlmtrainError(
                f"LoRA: {e}".splitlines()[0],
                "set --lora-target-modules to module names of this model (GLM-4: q_proj,k_proj,v_proj)",
            ) from None
        raise


def check_4bit_possible() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise GlmtrainError(
            "--load-in-4bit (QLoRA) needs a CUDA GPU and the bitsandbytes package",
            "pip install bitsandbytes on a GPU machine, or drop --load-in-4bit",
        )


def _quantization_config(dtype: str):
    import torch
    from transformers import BitsAndBytesConfig

    check_4bit_possible()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, dtype),
    )


# The Trainer writes a checkpoint's trainer_state.json last: a checkpoint without it was cut
# short (the run was killed while saving) and cannot be resumed from.
CHECKPOINT_COMPLETE = "trainer_state.json"


def latest_checkpoint(output_dir: str | Path) -> tuple[str | None, list[str]]:
    """The newest complete ``checkpoint-N`` in ``output_dir``, and the newer ones skipped as
    incomplete. transformers' ``get_last_checkpoint`` picks the newest directory even when a kill
    left it half written, and resuming from it then fails or loads a partial state."""
    import re

    found = []
    directory = Path(output_dir)
    if directory.is_dir():
        for path in directory.iterdir():
            match = re.fullmatch(r"checkpoint-(\d+)", path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    skipped: list[str] = []
    for _, path in sorted(found, reverse=True):
        if (path / CHECKPOINT_COMPLETE).is_file():
            return str(path), skipped
        skipped.append(str(path))
    return None, skipped


def resolve_resume(cfg: TrainConfig, console=None) -> str | None:
    """The checkpoint ``--resume`` names (``latest``: the newest complete one), checked."""
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        last, incomplete = latest_checkpoint(cfg.output_dir)
        if last is None:
            what = f"only incomplete ones ({', '.join(incomplete)})" if incomplete else "no checkpoint-* directory"
            raise GlmtrainError(
                f"--resume latest: {what} in {cfg.output_dir}",
                "train without --resume, or point --output-dir at the earlier run",
            )
        if incomplete and console is not None:
            console.print(
                f"[yellow]--resume latest:[/] {escape(', '.join(incomplete))} incomplete "
                f"(the run stopped while saving), skipped"
            )
        return last
    if not Path(cfg.resume).is_dir():
        raise GlmtrainError(f"--resume {cfg.resume}: no such checkpoint directory")
    if not (Path(cfg.resume) / CHECKPOINT_COMPLETE).is_file():
        raise GlmtrainError(
            f"--resume {cfg.resume}: the checkpoint is incomplete "
            f"(no {CHECKPOINT_COMPLETE}; the run stopped while saving it)",
            "resume from an earlier checkpoint, or use --resume latest",
        )
    return cfg.resume


def checkpoint_step(checkpoint: str | Path) -> int | None:
    """The optimizer step a checkpoint was saved at (from its trainer_state.json)."""
    try:
        state = json.loads((Path(checkpoint) / CHECKPOINT_COMPLETE).read_text(encoding="utf-8"))
        return int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_outputs_before(prep: Prepared, resume: str | None) -> None:
    out = Path(prep.cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(dump(prep.cfg), encoding="utf-8")
    report = {
        "train_file": prep.sources[0].report(),
        "train_files": [s.report() for s in prep.sources],
        "eval_file": prep.eval_source.report() if prep.eval_source is not None else None,
        "tokens": prep.plan["tokens"],
        "eval_tokens": prep.plan["eval_tokens"],
        "template": prep.plan["template"],
    }
    (out / REPORT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / PLAN_FILE).write_text(json.dumps(prep.plan, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if not resume and (out / PREDICTIONS_FILE).exists():
        (out / PREDICTIONS_FILE).unlink()


def save_tokenizer_template(prep: Prepared, directory: Path) -> None:
    """Write the training template into the saved tokenizer when the model's own differs (or is missing)."""
    from glmdata.render import install_template

    if prep.template_check.status == "same" or not prep.cfg.save_template:
        return
    # a known template is written as its training variant: the same bytes, plus {% generation %} markers
    install_template(directory, template=prep.template)


# --- interruptions ---------------------------------------------------------------------------


class Stopped(KeyboardInterrupt):
    """SIGTERM (or another stop signal) as an exception, so a run ends as on Ctrl-C: it says where."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_stop(*signums: int):
    """While inside, the given signals raise ``Stopped`` (SIGINT already raises KeyboardInterrupt)."""

    def stop(signum, frame):
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can take signals
        return
    previous = {signum: signal.signal(signum, stop) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Interrupted(GlmtrainError):
    """The run was stopped by a signal: exit code 128 + its number (130 for Ctrl-C, 143 for SIGTERM).
    ``quiet`` on the processes other than the main one, so the message is shown once."""

    def __init__(self, message: str, hint: str | None, signum: int, *, quiet: bool = False):
        super().__init__(message, hint, exit_code=128 + signum)
        self.quiet = quiet


def _signal_of(stop: KeyboardInterrupt) -> int:
    return stop.signum if isinstance(stop, Stopped) else signal.SIGINT


def interrupted(stop: KeyboardInterrupt, prep: Prepared, step: int | None) -> Interrupted:
    """What an interruption during training left: the step it stopped at and the last checkpoint."""
    signum = _signal_of(stop)
    name = signal.Signals(signum).name
    total = prep.plan["steps"]["total"]
    where = f"at step {step} of {total}" if step is not None else "while loading the model, before any step"
    last, _ = latest_checkpoint(prep.cfg.output_dir)
    quiet = not is_main_process()
    if last is None:
        return Interrupted(
            f"interrupted by {name} {where}; no checkpoint was written",
            f"run it again (checkpoints are written {_every(prep.plan['steps']['save_every'])})",
            signum,
            quiet=quiet,
        )
    at = checkpoint_step(last)
    return Interrupted(
        f"interrupted by {name} {where}; the last checkpoint is {last}" + (f" (step {at})" if at is not None else ""),
        "run the same command with --resume latest to continue from it",
        signum,
        quiet=quiet,
    )


# --- the run ---------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


def _evaluations_after(step: int, steps: dict[str, Any]) -> int:
    """Evaluations the trainer runs after ``step`` (at the eval steps from the first one, and at the end)."""
    if not steps["eval_every"]:
        return 0
    total = steps["total"]
    at = set(range(steps["first_eval"], total + 1, steps["eval_every"])) | {total}
    return sum(1 for s in at if s > step)


def report_timing(prep: Prepared, timing: dict[str, Any], console) -> None:
    """Say how long the rest of the run takes, and add it to plan.json (main process)."""
    steps = prep.plan["steps"]
    done = timing["timed_steps"][1]
    evaluations = _evaluations_after(done, steps)
    prep.plan["timing"] = {**timing, "evaluations_left": evaluations}
    path = Path(prep.cfg.output_dir) / PLAN_FILE
    path.write_text(json.dumps(prep.plan, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if not timing["remaining_steps"]:
        return
    console.print(
        ("" if prep.args.disable_tqdm else "\n")  # below the progress bar, not after it
        + f"[dim]timing:[/] {timing['seconds_per_step']:.2f} s per step (steps {timing['timed_steps'][0]} to {done}); "
        f"about {_duration(timing['remaining_seconds'])} for the {plural(timing['remaining_steps'], 'step')} left"
        + (
            f", plus {plural(evaluations, 'evaluation')} of {plural(prep.plan['rows']['eval'], 'row')}"
            if evaluations
            else ""
        )
    )


def keep_freed_memory() -> bool:
    """On CPU, keep the memory torch frees for its next allocations (glibc ``mallopt``).

    Training over GLM-4's 151552-token vocabulary allocates tiles of hundreds of MB at every step;
    glibc maps each one fresh and hands it back when freed, and the page faults of mapping them
    again cost more than the arithmetic (4x the time of a tiny-model step on a 2-core machine).
    With no mmap'd blocks and no trimming, freed blocks are reused; the process keeps its peak
    memory. Not done when the allocator was chosen already (``MALLOC_*``, ``LD_PRELOAD``) or off glibc.
    """
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ:
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, -1))  # -1: never trim


def end_process_group() -> None:
    """Under a launcher: wait until every process has finished, then close the process group.

    A process that exits with the group still open leaves gloo's worker threads to the interpreter's
    shutdown, which aborts it (``terminate called without an active exception``, SIGABRT), and the
    launcher then reports the whole run as failed.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train(prep: Prepared, console, checked: tuple[str | None, str | None] | None = None) -> dict[str, Any]:
    """Load the weights, train, and save adapter, tokenizer, config, data report and predictions.

    ``checked`` is what ``check_settings`` returned (it runs here when not given). Every process of a
    launcher trains its share of the rows; only the main one writes and logs.
    """
    from glmtrain.callbacks import (
        PredictionCallback,
        TimingCallback,
        finish_swanlab,
        prediction_samples,
        swanlab_callback,
    )

    cfg, args = prep.cfg, prep.args
    out = Path(cfg.output_dir)
    # every check that can fail comes before anything is written or loaded
    mode, resume = checked if checked is not None else check_settings(cfg, console)
    if args.process_index == 0:
        _write_outputs_before(prep, resume)

    callbacks: list[Any] = [TimingCallback(lambda timing: report_timing(prep, timing, console))]
    if mode is not None:
        callbacks.append(
            swanlab_callback(
                mode,
                project=cfg.project,
                run_name=cfg.run_name,
                log_dir=out / SWANLOG_DIR,
                config={"glmtrain": cfg.model_dump(), "plan": prep.plan},
            )
        )
    if prep.eval is not None and cfg.num_predictions > 0:
        samples = prediction_samples(prep.eval.rows, cfg.num_predictions)
        for sample in samples:
            sample.index = prep.eval.indices[sample.index]  # its row number in the data file
        callbacks.append(
            PredictionCallback(
                samples, out / PREDICTIONS_FILE, max_new_tokens=cfg.max_new_tokens, template=prep.template
            )
        )
    if resume:
        at = checkpoint_step(resume)
        console.print(f"resuming from {escape(resume)}" + (f" (step {at})" if at is not None else ""))

    if args.device.type == "cpu":
        keep_freed_memory()
    trainer = None
    # Libraries print progress to stdout; stdout is for data, so send their chatter to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            trainer = build_trainer(prep, callbacks)
            result = trainer.train(resume_from_checkpoint=resume)
            trainer.save_model(str(out))
            trainer.save_state()
            if trainer.is_world_process_zero():
                save_tokenizer_template(prep, out)
            end_process_group()
        except KeyboardInterrupt as stop:
            raise interrupted(stop, prep, trainer.state.global_step if trainer is not None else None) from None
        finally:
            if mode is not None:
                finish_swanlab()

    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    summary = {
        "output_dir": str(out),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "eval_loss": eval_losses[-1] if eval_losses else None,
        "predictions": str(out / PREDICTIONS_FILE) if (out / PREDICTIONS_FILE).exists() else None,
        "swanlab": {"mode": mode, "log_dir": str(out / SWANLOG_DIR)} if mode else None,
        "resumed_from": resume,
        "processes": args.world_size,
        "seconds_per_step": prep.plan.get("timing", {}).get("seconds_per_step"),
    }
    return summary


def run(cfg: TrainConfig, console, *, dry_run: bool = False) -> dict[str, Any]:
    """``glmtrain run``: the plan for ``dry_run``, else train and return a summary.

    The settings are checked first, then the data; a dry run makes every check but loads no weights.
    Under a launcher only the main process prints.
    """
    if not is_main_process():
        from rich.console import Console

        console = Console(stderr=True, quiet=True)
    try:
        checked = check_settings(cfg, console)
        prep = prepare(cfg, console, need_model=not dry_run)
    except KeyboardInterrupt as stop:
        signum = _signal_of(stop)
        raise Interrupted(
            f"interrupted by {signal.Signals(signum).name} before training started; nothing was written",
            None,
            signum,
            quiet=not is_main_process(),
        ) from None
    print_plan(prep.plan, console)
    if dry_run:
        return prep.plan
    return train(prep, console, checked)
