"""Training with the tiny random GLM-4 on CPU: labels, over-fitting, outputs, resume, merge, chat, SwanLab.

No mocks: these run TRL's SFTTrainer, PEFT and SwanLab (offline) for real, on a 2-layer model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from test_train_support import (
    CHAT_ROWS,
    EVAL_ROWS,
    TRAIN_ROWS,
    WEATHER,
    glmtrain_cli,
    glmtrain_env,  # noqa: F401 - fixture
    tiny_model_dir,  # noqa: F401 - fixture
    write_jsonl,
)

from glmtrain import config as cfgmod
from glmtrain import train as train_mod

QUIET = Console(stderr=True, quiet=True)
FAST = {"disable_tqdm": True}


def settings(data: Path, out: Path, **overrides) -> cfgmod.TrainConfig:
    base = dict(
        data=str(data),
        model="tiny-random",
        output_dir=str(out),
        tracker="none",
        gradient_checkpointing=False,
        logging_steps=1,
        sft=FAST,
    )
    return cfgmod.merge(("test", {**base, **overrides}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, glmtrain_env, tiny_model_dir):
    """One CLI run shared by the output tests: 4 steps, checkpoints every 2, evaluation with
    predictions on a held-out tool-call row, SwanLab offline."""
    root = tmp_path_factory.mktemp("trained")
    data = write_jsonl(root / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(root / "eval.jsonl", EVAL_ROWS)
    out = root / "out"
    result = glmtrain_cli(
        "run", data, "--model", "tiny-random", "--eval-data", held_out, "-o", out,
        "--max-steps", "4", "--save-steps", "2", "--eval-steps", "2", "--logging-steps", "1",
        "--max-new-tokens", "8", "--tracker", "offline", "--no-gradient-checkpointing", "--json",
        "--set", "sft.disable_tqdm=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return {"root": root, "data": data, "eval": held_out, "out": out, "summary": json.loads(result.stdout)}


# --------------------------------------------------------------------------------------- labels


def test_labels_the_trainer_sees_are_glmdatas_masks(tmp_path, glmtrain_env, tiny_model_dir):
    """Every batch SFTTrainer feeds the model carries exactly glmdata's labels, token for token."""
    from glmdata.masks import tokenize

    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    cfg = settings(data, tmp_path / "out", eval_split=0, batch_size=1, max_length=620)
    prep = train_mod.prepare(cfg, QUIET)
    expected = {}
    for row in TRAIN_ROWS:
        enc = tokenize(row["messages"], prep.tokenizer, max_length=620)
        expected[tuple(enc["input_ids"])] = enc["labels"]
    assert any(len(ids) == 620 for ids in expected)  # tool-call rows are cut inside the call: the cut labels match too

    trainer = train_mod.build_trainer(prep)
    seen = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(
            batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
        ):
            n = sum(mask)
            assert labels[:n] == expected[tuple(ids[:n])]
            assert all(label == -100 for label in labels[n:])  # padding is never trained
            seen += 1
    assert seen == len(TRAIN_ROWS)


# --------------------------------------------------------------------------------------- training


def test_loss_falls_when_overfitting_a_few_rows(tmp_path, glmtrain_env, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS[:3])
    cfg = settings(
        data, tmp_path / "out", eval_split=0, max_steps=20, learning_rate=1e-2, batch_size=3,
        gradient_accumulation_steps=1, lora_dropout=0.0, save_steps=1000,
    )  # fmt: skip
    summary = train_mod.run(cfg, QUIET)
    print(f"overfit: loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} in {summary['global_step']} steps")
    assert summary["global_step"] == 20
    assert summary["last_loss"] < 0.7 * summary["first_loss"]


def test_run_writes_adapter_tokenizer_config_report_and_predictions(trained):
    out, summary = trained["out"], trained["summary"]
    assert summary["global_step"] == 4
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "glmtrain.yaml",
        "data_report.json",
        "plan.json",
    ):
        assert (out / name).is_file(), name
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}
    config = cfgmod.merge(("saved", __import__("yaml").safe_load((out / "glmtrain.yaml").read_text(encoding="utf-8"))))
    assert config.max_steps == 4 and config.model == "tiny-random" and config.eval_data == str(trained["eval"])
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["train_file"]["rows_in"] == len(TRAIN_ROWS) and report["train_file"]["rejected"] == 0
    assert report["tokens"]["rows"] == len(TRAIN_ROWS)
    adapter = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 32
    assert sorted(adapter["target_modules"]) == ["k_proj", "q_proj", "v_proj"]

    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["step"] for p in predictions] == [2, 4]  # one held-out prompt, at each evaluation
    first = predictions[0]
    assert first["reference"] == 'get_weather\n{"city": "Rome"}'
    assert first["prompt"][-1] == {"role": "user", "content": "Weather in Rome?"}
    assert isinstance(first["answer"], str)
    assert set(first["tool_call"]) >= {"reference", "predicted", "name_match", "arguments_match", "call_match"}
    assert first["tool_call"]["reference"] == {"name": "get_weather", "arguments": {"city": "Rome"}}


def test_swanlab_offline_writes_its_run_directory(trained):
    runs = list((trained["out"] / "swanlog").glob("run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("*.swanlab")
    logged = log.read_bytes()
    for key in (b"train/loss", b"train/learning_rate", b"eval/loss", b"predictions"):
        assert key in logged, key
    config = (runs[0] / "files" / "config.yaml").read_text(encoding="utf-8")
    assert "glmtrain" in config and "learning_rate" in config  # glmtrain's settings and the trainer's
    assert trained["summary"]["swanlab"]["mode"] == "offline"


def test_tracker_none_writes_no_swanlab_directory(tmp_path, glmtrain_env, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS[:2])
    summary = train_mod.run(settings(data, tmp_path / "out", eval_split=0, max_steps=1, save_steps=1000), QUIET)
    assert summary["swanlab"] is None
    assert not (tmp_path / "out" / "swanlog").exists()


def test_a_short_run_logs_its_first_step_and_times_its_steps(tmp_path, glmtrain_env, tiny_model_dir):
    """Logging every 10 steps, a 3-step run still logs the loss at step 1 (and the last step), and once
    steps 2 and 3 are timed it says how long a step takes."""
    import io

    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS)
    out = tmp_path / "out"
    buffer = io.StringIO()
    console = Console(file=buffer, width=300)
    summary = train_mod.run(
        settings(data, out, eval_split=0, max_steps=4, logging_steps=10, gradient_accumulation_steps=1), console
    )
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 4]
    timing = json.loads((out / "plan.json").read_text(encoding="utf-8"))["timing"]
    assert timing["timed_steps"] == [2, 3] and timing["remaining_steps"] == 1 and timing["seconds_per_step"] > 0
    assert summary["seconds_per_step"] == timing["seconds_per_step"]
    assert "s per step (steps 2 to 3); about" in buffer.getvalue() and "for the 1 step left" in buffer.getvalue()


def test_allowed_template_mismatch_saves_the_training_template(tmp_path, tiny_model_dir):
    """With --allow-template-mismatch the saved tokenizer renders like training did, so inference matches."""
    import shutil

    from glmdata.render import GENERATION_TEMPLATE, load_template, render
    from glmdata.tokenizer import load_tokenizer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    template_file = model_dir / "chat_template.jinja"
    template_file.write_text(
        template_file.read_text(encoding="utf-8").replace("<|{{ item['role'] }}|>", "<|{{ item['role'] }}|> "),
        encoding="utf-8",
    )
    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS[:2])
    cfg = settings(
        data,
        tmp_path / "out",
        model=str(model_dir),
        eval_split=0,
        max_steps=1,
        save_steps=1000,
        allow_template_mismatch=True,
    )
    train_mod.run(cfg, QUIET)
    saved = load_tokenizer(tmp_path / "out")
    assert saved.chat_template == load_template(GENERATION_TEMPLATE).text
    messages = CHAT_ROWS[0]["messages"]
    assert saved.apply_chat_template(messages, tokenize=False) == render(messages)


def test_saved_adapter_reloads_and_changes_the_output(trained, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[151331, 151333, 151336, 10, 104, 105, 151337]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        before = base(input_ids=ids).logits
    tuned = PeftModel.from_pretrained(base, str(trained["out"])).eval()
    with torch.no_grad():
        after = tuned(input_ids=ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_resume_from_the_latest_checkpoint(trained, tmp_path):
    out = tmp_path / "resumed"
    import shutil

    shutil.copytree(trained["out"], out)
    shutil.rmtree(out / "checkpoint-4")
    result = glmtrain_cli(
        "run", trained["data"], "--model", "tiny-random", "--eval-split", "0", "-o", out, "--max-steps", "4",
        "--save-steps", "2", "--tracker", "none", "--resume", "latest", "--no-gradient-checkpointing", "--json",
        "--set", "sft.disable_tqdm=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert f"resuming from {out / 'checkpoint-2'} (step 2)" in " ".join(result.stderr.split())
    assert summary["global_step"] == 4
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps[-1] == 4 and 3 in steps  # steps 3 and 4 were trained after the resume
    missing = glmtrain_cli(
        "run", trained["data"], "--model", "tiny-random", "-o", tmp_path / "empty",
        "--resume", "latest", "--tracker", "none",
    )  # fmt: skip
    assert missing.exit_code == 2 and "no checkpoint" in missing.stderr


# ----------------------------------------------------------------------------------- merge and chat


def test_merge_writes_a_model_equal_to_base_plus_adapter(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from glmtrain.merge import load_trained

    target = tmp_path / "merged"
    result = glmtrain_cli("merge", trained["out"], "-o", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(target)
    merged = AutoModelForCausalLM.from_pretrained(target).eval()
    tuned, _ = load_trained(trained["out"])
    ids = torch.tensor([[151331, 151333, 151336, 10, 104, 105, 151337]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, atol=1e-4)
    assert (target / "tokenizer.json").is_file()
    assert glmtrain_cli("merge", tmp_path / "nothing").exit_code == 2


def test_chat_answers_and_shows_tool_calls_parsed(trained, tmp_path):
    from glmtrain.chat import ChatSession, chat_loop
    from glmtrain.merge import load_trained

    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps([WEATHER["function"]]), encoding="utf-8")
    result = glmtrain_cli("chat", trained["out"], "--tools", tools_file, "--max-new-tokens", "4")
    # typer's runner gives empty stdin: the chat ends at once, cleanly
    assert result.exit_code == 0, result.stderr

    model, tokenizer = load_trained(trained["out"])
    session = ChatSession(model, tokenizer, tools=[WEATHER], max_new_tokens=4)
    # the model's turn is scripted, to show how a call is handled end to end
    turns = iter(['get_weather\n{"city": "Rome"}', "\n25 degrees."])
    session.generate = lambda: next(turns)
    lines = iter(["Weather in Rome?", '{"temp": 25}', "/exit"])
    import io

    out = io.StringIO()
    chat_loop(session, QUIET, read=lambda: next(lines), out=out)
    assert out.getvalue().splitlines() == ['[tool call] get_weather {"city": "Rome"}', "25 degrees."]
    assert [m["role"] for m in session.history] == ["system", "user", "assistant", "observation", "assistant"]
    assert session.history[2] == {"role": "assistant", "metadata": "get_weather", "content": '{"city": "Rome"}'}
    # the real model renders the history with the saved tokenizer's template and generates
    real = ChatSession(model, tokenizer, tools=[WEATHER], max_new_tokens=4)
    text, _ = real.reply("hi")
    assert isinstance(text, str)


# ----------------------------------------------------------------------------------- interruptions


def test_an_interrupted_run_says_so_and_names_its_last_checkpoint(tmp_path, glmtrain_env, tiny_model_dir):
    """SIGTERM after a checkpoint: exit 143, the step it stopped at and the checkpoint to resume from.
    Ctrl-C (SIGINT) before any checkpoint: exit 130, and it says none was written. Both run at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_train_support import REPO

    data = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS)
    common = [
        "run", data, "--model", "tiny-random", "--eval-split", "0", "--max-steps", "1000", "--logging-steps", "1",
        "--tracker", "none", "--no-gradient-checkpointing", "--grad-accum", "1", "--set", "sft.disable_tqdm=true",
    ]  # fmt: skip
    env = {**os.environ, **glmtrain_env}
    runs = {}
    for name, save in (("term", "2"), ("int", "1000")):
        log = (tmp_path / f"{name}.log").open("w")
        args = [sys.executable, "-m", "glmtrain", *map(str, common), "--save-steps", save, "-o", str(tmp_path / name)]
        runs[name] = (subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log), log)
    try:
        deadline = time.monotonic() + 240
        waiting = {"term": tmp_path / "term" / "checkpoint-2" / "trainer_state.json", "int": tmp_path / "int.log"}
        while waiting:
            for name, path in list(waiting.items()):
                proc = runs[name][0]
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
                ready = path.exists() if name == "term" else "{'loss'" in path.read_text()  # training has started
                if ready:
                    proc.send_signal(signal.SIGTERM if name == "term" else signal.SIGINT)
                    del waiting[name]
            assert time.monotonic() < deadline, f"never got to {list(waiting)}"
            time.sleep(0.05)
        codes = {name: proc.wait(timeout=120) for name, (proc, _) in runs.items()}
    finally:
        for proc, log in runs.values():
            if proc.poll() is None:
                proc.kill()
            log.close()
    term = " ".join((tmp_path / "term.log").read_text().split())
    last, _ = train_mod.latest_checkpoint(tmp_path / "term")
    assert codes["term"] == 143, term[-3000:]
    assert last is not None and f"the last checkpoint is {last} (step " in term
    assert "error: interrupted by SIGTERM at step " in term and "of 1000" in term
    assert "--resume latest" in term and "Traceback" not in term
    interrupted = " ".join((tmp_path / "int.log").read_text().split())
    assert codes["int"] == 130, interrupted[-3000:]
    assert "error: interrupted by SIGINT at step " in interrupted and "no checkpoint was written" in interrupted
    assert not list((tmp_path / "int").glob("checkpoint-*"))


def test_predictions_generated_in_one_batch_equal_one_at_a_time(trained, monkeypatch):
    """The held-out prompts are answered in one left-padded batch; each answer is the one it gets alone."""
    from glmdata.render import render
    from glmtrain import callbacks
    from glmtrain.callbacks import generate_replies, generate_reply
    from glmtrain.merge import load_trained

    model, tokenizer = load_trained(trained["out"])
    # the tiny model answers with ids its byte tokenizer has no text for: compare the ids, and stop only
    # on <|observation|> so that the answers are 6 tokens long
    monkeypatch.setattr(type(tokenizer), "decode", lambda self, ids, **kwargs: " ".join(map(str, ids)))
    monkeypatch.setattr(callbacks, "STOP_TOKENS", ("<|observation|>",))
    prompts = [render(r["messages"][:-1], add_generation_prompt=True) for r in CHAT_ROWS[:3]]
    prompts.append(render(EVAL_ROWS[0]["messages"][:2], add_generation_prompt=True))  # the longest, a tool prompt
    batched = generate_replies(model, tokenizer, prompts, max_new_tokens=6)
    alone = [generate_reply(model, tokenizer, p, max_new_tokens=6) for p in prompts]
    print("answers:", alone)
    assert batched == alone and len(batched) == 4 and all(alone)
