"""Trainer callbacks glmtrain adds: SwanLab set-up that never prompts, and held-out predictions.

SwanLab logging itself is SwanLab's own transformers integration; this module only picks its mode
(cloud when logged in, offline otherwise) so a run never stops at a login prompt. The prediction
callback is what the GLM-4 tutorials do by hand in ``on_save``: generate answers for a few held-out
prompts at each evaluation, log them next to the references, and score them with ``glmtrain eval``'s
scoring (tool-call accuracy, answer match), logged with the evaluation's metrics.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from glmdata.models import MessageDict, MessagesRow

# GLM-4 ends an assistant turn by starting the next one; these are the tokens generation stops on.
STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")


def stop_token_ids(tokenizer) -> list[int]:
    """Ids of the GLM-4 stop tokens present in ``tokenizer``."""
    ids = []
    for tok in STOP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.append(tid)
    return ids


def generate_reply(model, tokenizer, prompt_text: str, *, max_new_tokens: int, synced_gpus: bool = False) -> str:
    """Greedy continuation of a rendered prompt (ending in ``<|assistant|>``), up to a GLM-4 stop token.

    Returns the text after ``<|assistant|>``: ``NAME\\n{arguments}`` for a tool call, ``\\n...`` for an answer.
    """
    return generate_replies(model, tokenizer, [prompt_text], max_new_tokens=max_new_tokens, synced_gpus=synced_gpus)[0]


def generate_replies(
    model, tokenizer, prompts: list[str], *, max_new_tokens: int, synced_gpus: bool = False
) -> list[str]:
    """``generate_reply`` for several prompts in one batch (left-padded), so they share each decoding step."""
    import torch

    if len(prompts) > 1 and tokenizer.pad_token_id is None:
        return [generate_replies(model, tokenizer, [p], max_new_tokens=max_new_tokens)[0] for p in prompts]
    stop = stop_token_ids(tokenizer)
    enc = tokenizer(prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt").to(
        model.device
    )
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            synced_gpus=synced_gpus,
        )
    replies = []
    for new_ids in out[:, enc["input_ids"].shape[1] :].tolist():
        end = next((i for i, t in enumerate(new_ids) if t in stop), len(new_ids))  # the rest is padding
        replies.append(tokenizer.decode(new_ids[:end], skip_special_tokens=True))
    return replies


def tracker_mode(tracker: str) -> str | None:
    """The SwanLab mode for ``--tracker``: ``online``, ``offline`` or ``None`` (disabled).

    ``auto`` is online only when an API key is available (``SWANLAB_API_KEY`` or a saved
    ``swanlab login``), so SwanLab never asks for one interactively; ``SWANLAB_MODE`` wins if set.
    """
    if tracker == "none":
        return None
    if tracker == "offline":
        return "offline"
    logged_in = _swanlab_logged_in()
    if tracker == "cloud":
        if not logged_in:
            from glmtrain.config import GlmtrainError

            raise GlmtrainError(
                "--tracker cloud needs a SwanLab login",
                "run `swanlab login` (or set SWANLAB_API_KEY), or use --tracker offline",
            )
        return "online"
    env = os.environ.get("SWANLAB_MODE")
    if env == "disabled":
        return None
    if env in ("offline", "local"):
        return "offline"  # local mode needs swanboard; offline writes the same files, for `swanlab sync`
    return "online" if logged_in else "offline"


def _swanlab_logged_in() -> bool:
    if os.environ.get("SWANLAB_API_KEY"):
        return True
    try:
        import swanlab

        return swanlab.Settings().api_key is not None  # reads the key `swanlab login` saved; no network
    except Exception:
        return False


def swanlab_callback(mode: str, *, project: str, run_name: str | None, log_dir: Path, config: dict[str, Any]):
    """SwanLab's own transformers callback, set to ``mode``, with glmtrain's config logged too."""
    from swanlab.integration.transformers import SwanLabCallback

    cb = SwanLabCallback(project=project, experiment_name=run_name, mode=mode, log_dir=str(log_dir))
    cb.update_config(config)
    return cb


def finish_swanlab() -> None:
    """Close the SwanLab run, if one is open, so its files are complete."""
    try:
        import swanlab

        swanlab.get_run()
    except Exception:
        return
    swanlab.finish()


def _active_swanlab():
    try:
        import swanlab

        swanlab.get_run()
        return swanlab
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# tool calls


def parse_tool_call(text: str) -> dict[str, Any] | None:
    """Parse GLM-4's native tool-call output, ``NAME\\n{json arguments}``; ``None`` for a plain answer.

    ``glmdata.calls.parse_turn`` in the glm-4-9b-chat format; a call whose arguments do not parse is
    ``{"name", "arguments": None, "raw"}``.
    """
    from glmdata.calls import parse_turn

    turn = parse_turn(text, "glm-4-9b-chat")
    if turn.calls:
        return {"name": turn.calls[0].name, "arguments": turn.calls[0].arguments}
    if turn.error is None:
        return None
    name, _, rest = text.partition("\n")
    return {"name": name.strip(), "arguments": None, "raw": rest}


def compare_calls(predicted: dict[str, Any] | None, reference: dict[str, Any]) -> dict[str, bool]:
    """Whether a predicted call matches the reference: tool name, arguments (as JSON values), both."""
    from glmtrain.evaluate import compare_call

    return compare_call(predicted, reference)


@dataclass
class PredictionSample:
    """A held-out prompt (the conversation up to an assistant turn) and that turn as the reference."""

    index: int
    prompt: list[MessageDict]
    reference: MessageDict

    @property
    def reference_call(self) -> dict[str, Any] | None:
        from glmtrain.evaluate import reference_call

        return reference_call(self.reference)

    @property
    def reference_text(self) -> str:
        """The reference as written in the predictions: ``NAME\\n{arguments}`` for a call, else the text."""
        from glmtrain.evaluate import reference_text

        return reference_text(self.reference)


def prediction_samples(rows: list[MessagesRow], limit: int) -> list[PredictionSample]:
    """Up to ``limit`` samples, one per row: the prompt before the row's first trained assistant turn."""
    out: list[PredictionSample] = []
    for i, row in enumerate(rows):
        if len(out) >= limit:
            break
        messages = row["messages"]
        for j, m in enumerate(messages):
            if m["role"] == "assistant" and m.get("loss") is not False and j > 0:
                out.append(PredictionSample(i, messages[:j], m))
                break
    return out


class PredictionCallback(TrainerCallback):
    """At each evaluation, generate answers for held-out prompts, score them as ``glmtrain eval``
    does, and log the answers (SwanLab panel, JSONL file) and the scores (the trainer's metrics).

    Prompts are rendered with glmdata, the same renderer the training rows went through, and
    answers are read in the call format of that template's family. The scores
    (``glmtrain.evaluate.log_metrics``: ``eval_tool_call_exact``, ``eval_answer_char_f1``, ...) join
    the evaluation's metrics (what ``Trainer.evaluate`` returns, so ``metric_for_best_model`` can
    name them), the trainer state's log history, and SwanLab (as ``eval/...``). Under DeepSpeed
    ZeRO-3 or FSDP every rank must take part in generation (``synced_gpus``); only the main
    process writes.
    """

    def __init__(self, samples: list[PredictionSample], path: Path, *, max_new_tokens: int = 256, template=None):
        from glmtrain.evaluate import DEFAULT_FAMILY, template_family

        self.samples = samples
        self.path = Path(path)
        self.max_new_tokens = max_new_tokens
        self.template = template  # the training template (glmdata's default when None)
        self.family = (template_family(template) if template is not None else None) or DEFAULT_FAMILY
        self.metrics: dict[str, float] = {}  # the last evaluation's scores

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        if not self.samples or model is None or processing_class is None:
            return
        sharded = _sharded_parameters(args)
        if not sharded and not state.is_world_process_zero:
            return
        records = self.predict(model, processing_class, step=state.global_step, synced_gpus=sharded)
        if metrics is not None:
            metrics.update(self.metrics)
        if state.is_world_process_zero:
            if self.metrics:
                state.log_history.append({**self.metrics, "epoch": state.epoch, "step": state.global_step})
            self._write(records, state.global_step)

    def predict(self, model, tokenizer, *, step: int = 0, synced_gpus: bool = False) -> list[dict[str, Any]]:
        """Generate greedily for every sample, score it against its reference (``self.metrics``: the summary)."""
        from glmdata.render import render
        from glmtrain.evaluate import compare_call, declared_tools, log_metrics, score_turn, summarize, turn_record

        was_training = model.training
        model.eval()
        records = []
        try:
            prompts = [render(s.prompt, add_generation_prompt=True, template=self.template) for s in self.samples]
            answers = generate_replies(
                model, tokenizer, prompts, max_new_tokens=self.max_new_tokens, synced_gpus=synced_gpus
            )
        finally:
            if was_training:
                model.train()
        scores = []
        for sample, answer in zip(self.samples, answers):
            score, turn = score_turn(sample.reference, answer, self.family, declared_tools(sample.prompt))
            scores.append(score)
            record: dict[str, Any] = {
                "step": step,
                "index": sample.index,
                "prompt": sample.prompt,
                "reference": sample.reference_text,
                # an answer starts with the newline after <|assistant|>; a call with the tool name
                "answer": answer if turn.has_call else answer.removeprefix("\n"),
                "parsed": turn_record(turn),
                "score": score,
            }
            ref_call = sample.reference_call
            if ref_call is not None:
                first = turn.calls[0] if turn.calls else None
                predicted = {"name": first.name, "arguments": first.arguments} if first else None
                record["tool_call"] = {
                    "reference": ref_call,
                    "predicted": predicted,
                    **compare_call(predicted, ref_call),
                }
            records.append(record)
        self.metrics = log_metrics(summarize(scores))
        return records

    def _write(self, records: list[dict[str, Any]], step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        swanlab = _active_swanlab()
        if swanlab is None:
            return
        logs: dict[str, Any] = {
            "predictions": [
                swanlab.Text(
                    f"PROMPT\n{_last_turns(r['prompt'])}\n\nREFERENCE\n{r['reference']}\n\nANSWER\n{r['answer']}",
                    caption=f"row {r['index']}",
                )
                for r in records
            ]
        }
        # SwanLab's transformers integration names eval_X as eval/X; the scores come after its own
        # on_evaluate, so they are logged here, under the same names
        logs.update({"eval/" + key.removeprefix("eval_"): value for key, value in self.metrics.items()})
        swanlab.log(logs, step=step)


def _last_turns(prompt: list[dict[str, Any]], n: int = 3) -> str:
    """The last few turns of a prompt as text (the tools block would drown the panel)."""
    shown = prompt[-n:]
    return "\n".join(f"<|{m['role']}|>{m.get('metadata') or ''}\n{m['content']}" for m in shown)


def _sharded_parameters(args) -> bool:
    """True under DeepSpeed ZeRO-3 or FSDP, where generation needs every rank."""
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return True
    except ImportError:  # pragma: no cover
        pass
    return bool(getattr(args, "fsdp", None)) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


# ---------------------------------------------------------------------------------------------
# timing


class TimingCallback(TrainerCallback):
    """Once the first steps are timed, say how long the run will take (and hand it to ``report``).

    Step 1 is left out of the rate (it pays for warm-up); the rate is that of steps 2 to ``after``.
    Evaluations are not counted: their time shows in the logs (``eval_runtime``).
    """

    def __init__(self, report: Callable[[dict[str, Any]], None], *, after: int = 3):
        self.report = report
        self.after = after
        self._first: tuple[int, float] | None = None
        self._reported = False

    def on_step_end(self, args, state, control, **kwargs):
        if self._reported or not state.is_world_process_zero:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (state.global_step, now)
            return
        first_step, first_time = self._first
        last = min(self.after, state.max_steps)
        if state.global_step < last and state.global_step < state.max_steps:
            return
        per_step = (now - first_time) / max(1, state.global_step - first_step)
        remaining = max(0, state.max_steps - state.global_step)
        self._reported = True
        self.report(
            {
                "timed_steps": [first_step + 1, state.global_step],
                "seconds_per_step": round(per_step, 3),
                "remaining_steps": remaining,
                "remaining_seconds": round(per_step * remaining, 1),
            }
        )
