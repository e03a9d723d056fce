"""``glmtrain eval``: generate every held-out assistant turn with the trained adapter and score it.

For every assistant turn of the held-out rows the model answers greedily from the conversation
before it, rendered with the template the run saved (what inference uses); the answer is read back
with ``glmdata.calls.parse_turn`` in the template family's call format and scored against the turn.

Scoring (``score_turn``, ``summarize``, ``log_metrics``) is pure Python, and is the one
implementation: the prediction callback scores the samples it generates at each evaluation during
training with the same functions, and logs the same numbers.

- a turn whose reference is a tool call: did the model call (``called``), does the call parse
  (``parseable``), is it the right tool (``name``), are the arguments the reference's exactly
  (``arguments``: parsed object == reference object, as JSON values); no call at all is ``missed``.
  When the model writes several calls (``glm-4.5``), the first one is compared.
- a text turn: a call there is ``unexpected_call``; the answer is scored by exact match (after
  stripping surrounding whitespace), character F1 and ROUGE-L over characters (whitespace left
  out), which need no word segmenter and so work for Chinese as for English.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from glmtrain.config import DataProblem, GlmtrainError, plural

if TYPE_CHECKING:
    from glmdata.calls import Turn
    from glmdata.models import MessageDict, MessagesRow, ToolDict

PREDICTIONS_FILE = "eval_predictions.jsonl"
DEFAULT_FAMILY = "glm-4-9b-chat"  # how glmdata's default template writes calls


# --- references -------------------------------------------------------------------------------


def reference_call(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """The call an assistant message makes (native form: ``metadata`` = name, ``content`` = JSON arguments)."""
    if not message.get("metadata"):
        return None
    try:
        arguments = json.loads(message["content"])
    except json.JSONDecodeError:
        arguments = message["content"]
    return {"name": message["metadata"], "arguments": arguments}


def reference_text(message: Mapping[str, Any]) -> str:
    """The reference as a predictions file shows it: ``NAME\\n{arguments}`` for a call, else the text."""
    if message.get("metadata"):
        return f"{message['metadata']}\n{message['content']}"
    return str(message["content"])


def declared_tools(messages: Sequence[Mapping[str, Any]]) -> list[ToolDict]:
    """The tools a conversation declares (glmdata puts them on the system message)."""
    return [tool for m in messages for tool in (m.get("tools") or [])]


def template_family(template) -> str | None:
    """The call-format family of a glmdata ``Template``: by its exact text (a known template), else by
    its packaged name; ``None`` when it is neither."""
    from glmdata.calls import CallFormatError, family_of
    from glmdata.render import known_template

    for name in (known_template(template), template.origin.removeprefix("glmdata:")):
        if name:
            try:
                return family_of(name)
            except CallFormatError:
                continue
    return None


# --- scoring ----------------------------------------------------------------------------------


def compare_call(predicted: Mapping[str, Any] | None, reference: Mapping[str, Any]) -> dict[str, bool]:
    """Whether a predicted call (``{"name", "arguments"}``, or ``None``) is the reference's: tool name,
    arguments as JSON values, both."""
    from glmdata.calls import json_equal

    name = predicted is not None and predicted.get("name") == reference["name"]
    arguments = (
        predicted is not None
        and predicted.get("arguments") is not None
        and json_equal(predicted["arguments"], reference["arguments"])
    )
    return {"name_match": name, "arguments_match": arguments, "call_match": name and arguments}


def score_turn(
    reference: Mapping[str, Any], answer: str, family: str, tools: Sequence[Mapping[str, Any]] | None = None
) -> tuple[dict[str, Any], Turn]:
    """Score the generated ``answer`` (the text after ``<|assistant|>``) against the ``reference``
    assistant message; returns the scores and the answer read back as a ``Turn``."""
    from glmdata.calls import parse_turn

    turn = parse_turn(answer, family, tools)
    ref_call = reference_call(reference)
    if ref_call is not None:
        first = turn.calls[0] if turn.calls else None
        predicted = {"name": first.name, "arguments": first.arguments} if first else None
        match = compare_call(predicted, ref_call)
        return {
            "kind": "call",
            "called": turn.has_call,
            "parseable": bool(turn.calls),
            "name": match["name_match"],
            "arguments": match["call_match"],
            "missed": not turn.has_call,
        }, turn
    ref, got = str(reference["content"]), "" if turn.has_call else turn.content
    return {
        "kind": "text",
        "unexpected_call": turn.has_call,
        "exact": got.strip() == ref.strip(),
        "char_f1": round(char_f1(got, ref), 6),
        "rouge_l": round(rouge_l(got, ref), 6),
    }, turn


def _chars(text: str) -> str:
    return "".join(text.split())


def char_f1(prediction: str, reference: str) -> float:
    """F1 of the characters two texts share (as multisets; whitespace left out). 1.0 when both are empty."""
    p, r = _chars(prediction), _chars(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over characters (whitespace left out): from the longest common subsequence."""
    p, r = _chars(prediction), _chars(reference)
    if not p or not r:
        return float(p == r)
    lcs = lcs_length(p, r)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of two strings.

    Bit-parallel (Allison and Dix 1986, Hyyro 2004): one row of the dynamic program is one Python
    integer, so a turn of thousands of characters takes milliseconds instead of the seconds that
    the table of ``len(a) * len(b)`` cells takes; ``tests/test_evaluate.py`` holds it equal to the table.
    """
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for ch in b:
        matches = row & masks.get(ch, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(a) - row.bit_count()


def summarize(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and rates over scored turns: tool calls (rates over the turns that expect one;
    ``unexpected`` over the text turns) and answers (means over the text turns)."""
    calls = [s for s in scores if s["kind"] == "call"]
    texts = [s for s in scores if s["kind"] == "text"]
    tool_calls: dict[str, Any] = {
        "expected": len(calls),
        "called": sum(s["called"] for s in calls),
        "parseable": sum(s["parseable"] for s in calls),
        "right_name": sum(s["name"] for s in calls),
        "exact_arguments": sum(s["arguments"] for s in calls),
        "missed": sum(s["missed"] for s in calls),
        "unexpected": sum(s["unexpected_call"] for s in texts),
    }
    answers: dict[str, Any] = {"turns": len(texts)}
    if calls:
        tool_calls["rates"] = {
            key: round(tool_calls[key] / len(calls), 6)
            for key in ("parseable", "right_name", "exact_arguments", "missed")
        }
    if texts:
        tool_calls.setdefault("rates", {})["unexpected"] = round(tool_calls["unexpected"] / len(texts), 6)
        answers["exact_match"] = round(sum(s["exact"] for s in texts) / len(texts), 6)
        answers["char_f1"] = round(sum(s["char_f1"] for s in texts) / len(texts), 6)
        answers["rouge_l"] = round(sum(s["rouge_l"] for s in texts) / len(texts), 6)
    return {"turns": len(scores), "tool_calls": tool_calls, "answers": answers}


#: The flat metric names ``log_metrics`` gives (with the ``eval_`` prefix), what each one is.
METRICS = {
    "tool_call_parseable": "share of the expected calls that were written and parse",
    "tool_call_name": "share of the expected calls with the right tool name",
    "tool_call_exact": "share of the expected calls with the right name and exactly the reference's arguments",
    "tool_call_missed": "share of the expected calls answered in text instead",
    "tool_call_unexpected": "share of the text turns answered with a call instead",
    "answer_exact_match": "share of the text turns answered exactly",
    "answer_char_f1": "mean character F1 of the text turns",
    "answer_rouge_l": "mean character ROUGE-L of the text turns",
}


def log_metrics(summary: Mapping[str, Any], prefix: str = "eval_") -> dict[str, float]:
    """The summary as flat numbers for a trainer log (``eval_tool_call_exact``, ...): only those
    with turns to measure."""
    rates = summary["tool_calls"].get("rates", {})
    answers = summary["answers"]
    values = {
        "tool_call_parseable": rates.get("parseable"),
        "tool_call_name": rates.get("right_name"),
        "tool_call_exact": rates.get("exact_arguments"),
        "tool_call_missed": rates.get("missed"),
        "tool_call_unexpected": rates.get("unexpected"),
        "answer_exact_match": answers.get("exact_match"),
        "answer_char_f1": answers.get("char_f1"),
        "answer_rouge_l": answers.get("rouge_l"),
    }
    return {prefix + key: float(value) for key, value in values.items() if value is not None}


def turn_record(turn: Turn) -> dict[str, Any]:
    """A parsed turn as JSON for a predictions file."""
    return {
        "content": turn.content,
        "reasoning": turn.reasoning,
        "calls": [{"name": c.name, "arguments": c.arguments} for c in turn.calls],
        "error": turn.error,
    }


# --- the held-out turns -----------------------------------------------------------------------


@dataclass
class EvalTurn:
    """One assistant turn to generate: its row (number in the data file), its message index, the
    conversation before it, and the turn itself."""

    row: int
    turn: int
    prompt: list[MessageDict]
    reference: MessageDict


def eval_turns(rows: Sequence[MessagesRow], indices: Sequence[int]) -> list[EvalTurn]:
    """Every trained assistant turn (``loss`` not false) with something before it."""
    out = []
    for row, number in zip(rows, indices):
        messages = row["messages"]
        for j, message in enumerate(messages):
            if message["role"] == "assistant" and message.get("loss") is not False and j > 0:
                out.append(EvalTurn(number, j, messages[:j], message))
    return out


def held_out_rows(output_dir: Path, data: str, saved: Mapping[str, Any], *, skip_invalid: bool, console):
    """The rows of ``data`` to evaluate, and where they come from. When ``data`` is the run's training
    file, only the rows the run held out (the same split, same seed); otherwise all of them."""
    from glmtrain.train import read_rows, split_rows

    rows = read_rows(data, skip_invalid=skip_invalid, console=console)
    trained = saved.get("data")
    files = [trained] if isinstance(trained, str) else list(trained or [])
    if data == "-" or not any(_same_file(data, f) for f in files):
        return rows, "all rows of the file"
    if len(files) > 1:
        raise GlmtrainError(
            f"{data} is one of the files this run mixed for training; its held-out rows cannot be picked out of it",
            "evaluate on a held-out file (`glmdata split` writes one, then train with --eval-data)",
        )
    if saved.get("eval_data"):
        raise GlmtrainError(
            f"{data} is the training file of this run (it held out {saved['eval_data']} instead)",
            f"glmtrain eval {output_dir} {saved['eval_data']}",
        )
    _, held = split_rows(rows, float(saved.get("eval_split", 0.1)), int(saved.get("seed", 42)))
    if not held:
        raise GlmtrainError(
            f"{data} is the training file of this run, and the run held out none of its rows (--eval-split 0)",
            "evaluate on rows the model was not trained on: a held-out file",
        )
    return rows.subset(held), f"the rows the run held out of its training file (--eval-split {saved.get('eval_split')})"


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


# --- the command ------------------------------------------------------------------------------


def evaluate(
    output_dir: str | Path,
    data: str,
    *,
    console,
    rows: int | None = None,
    seed: int | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    family: str | None = None,
    output: str | Path | None = None,
    base_model: str | None = None,
    dtype: str = "auto",
    skip_invalid: bool | None = None,
) -> dict[str, Any]:
    """``glmtrain eval``: generate every held-out assistant turn, score it, write the predictions
    JSONL (atomically) and return the summary."""
    import yaml

    from glmdata.calls import CallFormatError, family_of
    from glmdata.io import atomic_writer, dump_row
    from glmdata.render import TemplateError, load_template, render

    out = Path(output_dir)
    if not (out / "adapter_config.json").is_file():
        raise GlmtrainError(
            f"{out}: no adapter_config.json here", "pass the output directory of `glmtrain run` (its --output-dir)"
        )
    if rows is not None and rows < 1:
        raise GlmtrainError(f"--rows must be at least 1, got {rows}")
    if max_new_tokens < 1 or batch_size < 1:
        raise GlmtrainError("--max-new-tokens and --batch-size must be at least 1")
    config_file = out / "glmtrain.yaml"
    saved = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}) if config_file.is_file() else {}
    try:
        template = load_template(out)
    except TemplateError as e:
        raise GlmtrainError(f"{out}: {e}") from None
    if family is not None:
        try:
            family = family_of(family)
        except CallFormatError as e:
            raise GlmtrainError(f"--family: {e}") from None
    else:
        family = template_family(template)
        if family is None:
            console.print(
                f"[yellow]the saved template ({escape(template.origin)}) is not one glmdata knows:[/] reading calls "
                f"as {DEFAULT_FAMILY} writes them (--family chooses)"
            )
            family = DEFAULT_FAMILY
    target = Path(output) if output is not None else out / PREDICTIONS_FILE

    held, source = held_out_rows(
        out, data, saved, skip_invalid=bool(saved.get("skip_invalid")) if skip_invalid is None else skip_invalid,
        console=console,
    )  # fmt: skip
    available = len(held.rows)
    if rows is not None and rows < available:
        keep = sorted(random.Random(saved.get("seed", 42) if seed is None else seed).sample(range(available), rows))
        held = held.subset(keep)
    turns = eval_turns(held.rows, held.indices)
    if not turns:
        raise DataProblem(f"{data}: no assistant turn to generate in {plural(len(held.rows), 'row')}")
    prompts = []
    for t in turns:
        try:
            prompts.append(render(t.prompt, add_generation_prompt=True, template=template))
        except (TemplateError, ValueError) as e:
            raise DataProblem(
                f"{data}: row {t.row}: the prompt before messages[{t.turn}] does not render: {e}"
            ) from None

    from glmtrain.merge import load_trained

    model, tokenizer = load_trained(out, base_model=base_model, dtype=dtype)
    answers = generate_all(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, console=console
    )

    records, scores = [], []
    for t, answer in zip(turns, answers):
        tools = declared_tools(t.prompt)
        score, parsed = score_turn(t.reference, answer, family, tools)
        scores.append(score)
        records.append(
            {
                "row": t.row,
                "turn": t.turn,
                "reference": reference_text(t.reference),
                "reference_call": reference_call(t.reference),
                "prediction": answer,
                "parsed": turn_record(parsed),
                "score": score,
            }
        )
    with atomic_writer(target) as f:
        for record in records:
            f.write(dump_row(record))
    summary = summarize(scores)
    return {
        "output_dir": str(out),
        "data": data,
        "rows": {"evaluated": len(held.rows), "available": available, "from": source},
        "family": family,
        "template": template.origin,
        "max_new_tokens": max_new_tokens,
        "predictions": str(target),
        **summary,
        "metrics": log_metrics(summary),
    }


def generate_all(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, console) -> list[str]:
    """Greedy answers for every prompt, in batches of prompts of similar length (less padding), in order."""
    from rich.progress import Progress

    from glmtrain.callbacks import generate_replies

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating", total=len(prompts))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            for i, answer in zip(
                batch, generate_replies(model, tokenizer, [prompts[i] for i in batch], max_new_tokens=max_new_tokens)
            ):
                answers[i] = answer
            progress.advance(task, len(batch))
    return answers


def print_summary(summary: Mapping[str, Any], console) -> None:
    """The scores as a table on ``console`` (stderr)."""
    from rich.table import Table

    calls, answers, rows = summary["tool_calls"], summary["answers"], summary["rows"]
    table = Table(title=f"glmtrain eval: {escape(summary['output_dir'])}", title_justify="left", show_header=False)
    table.add_row(
        "rows",
        f"{rows['evaluated']} of {rows['available']} ({escape(rows['from'])}); {plural(summary['turns'], 'turn')}",
    )
    table.add_row("format", f"{summary['family']} (template {escape(summary['template'])})")
    rates = calls.get("rates", {})

    def share(key: str, count: int, of: int) -> str:
        return f"{count} of {of} ({100 * rates[key]:.1f}%)" if key in rates else f"{count} of {of}"

    expected = calls["expected"]
    if expected:
        table.add_row("tool calls expected", str(expected))
        table.add_row("  parseable", share("parseable", calls["parseable"], expected))
        table.add_row("  right tool", share("right_name", calls["right_name"], expected))
        table.add_row("  exact arguments", share("exact_arguments", calls["exact_arguments"], expected))
        table.add_row("  missed (answered in text)", share("missed", calls["missed"], expected))
    if answers["turns"]:
        table.add_row("text turns", str(answers["turns"]))
        table.add_row("  call instead of text", share("unexpected", calls["unexpected"], answers["turns"]))
        table.add_row("  exact match", f"{100 * answers['exact_match']:.1f}%")
        table.add_row("  character F1", f"{answers['char_f1']:.3f}")
        table.add_row("  character ROUGE-L", f"{answers['rouge_l']:.3f}")
    table.add_row("predictions", escape(summary["predictions"]))
    console.print(table)
