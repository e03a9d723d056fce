"""Padding-free batching: the rule that picks it, and that it trains exactly what padded batches train.

No mocks: TRL's SFTTrainer on the tiny random GLM-4 (``GlmForCausalLM``, sdpa), one step each way;
the rule reads ``config.json`` files written here (no weights).
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from test_train_support import (
    CHAT_ROWS,
    TRAIN_ROWS,
    chat_row,
    glmtrain_cli,
    glmtrain_env,  # noqa: F401 - fixture
    tiny_model_dir,  # noqa: F401 - fixture
    tool_call_row,
    write_jsonl,
)

from glmtrain import config as cfgmod
from glmtrain import train as train_mod
from glmtrain.config import GlmtrainError

QUIET = Console(stderr=True, quiet=True)
# rows of different lengths; the tool-call rows have two assistant turns (masks with a hole in them)
ROWS = [CHAT_ROWS[0], tool_call_row("Paris", 21), CHAT_ROWS[2], tool_call_row("Reykjavik", -3)]


def settings(data, out: Path, **overrides) -> cfgmod.TrainConfig:
    base = dict(
        data=str(data),
        model="tiny-random",
        output_dir=str(out),
        tracker="none",
        gradient_checkpointing=False,
        logging_steps=1,
        eval_split=0,
        lora_dropout=0.0,  # dropout draws other masks for other shapes: off, so both ways compute the same
        batch_size=4,
        gradient_accumulation_steps=1,
        sft={"disable_tqdm": True},
    )
    return cfgmod.merge(("test", {**base, **overrides}))


def fed_rows(trainer) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (ids, labels) row the trainer's dataloader feeds, padding left out; padding-free batches
    are split where position_ids start again at 0."""
    rows = []
    for batch in trainer.get_train_dataloader():
        if "position_ids" in batch:
            assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
            ids, labels, positions = (batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids"))
            starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
            rows += [(tuple(ids[a:b]), tuple(labels[a:b])) for a, b in itertools.pairwise(starts)]
        else:
            for ids, labels, mask in zip(*(batch[k].tolist() for k in ("input_ids", "labels", "attention_mask"))):
                n = sum(mask)
                assert all(label == -100 for label in labels[n:])
                rows.append((tuple(ids[:n]), tuple(labels[:n])))
    return rows


@pytest.fixture(scope="module")
def both(tmp_path_factory, glmtrain_env, tiny_model_dir):
    """The same 4 rows, one batch: glmtrain's default (auto) and padded (--no-padding-free)."""
    root = tmp_path_factory.mktemp("batching")
    data = write_jsonl(root / "train.jsonl", ROWS)
    preps = {
        "auto": train_mod.prepare(settings(data, root / "auto"), QUIET),
        "padded": train_mod.prepare(settings(data, root / "padded", padding_free=False), QUIET),
    }
    return {name: (prep, train_mod.build_trainer(prep)) for name, prep in preps.items()}


def test_auto_picks_padding_free_and_the_trainer_gets_position_ids_and_no_padding(both):
    import torch

    prep, trainer = both["auto"]
    assert prep.plan["batching"] == {
        "mode": "padding-free",
        "setting": None,
        "reason": "padding-free: the model builds its attention masks from position_ids (glm)",
    }
    assert prep.args.padding_free and prep.args.max_length is None  # glmtrain cut the rows itself
    assert both["padded"][0].plan["batching"]["mode"] == "padded" and not both["padded"][0].args.padding_free
    (batch,) = list(trainer.get_train_dataloader())
    assert "attention_mask" not in batch and "position_ids" in batch
    lengths = sorted(len(ids) for ids in prep.train_dataset["input_ids"])
    assert len(set(lengths)) == 4  # rows of 4 different lengths
    assert batch["input_ids"].shape == (1, sum(lengths))  # every token of the 4 rows, not one of padding
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert sorted(torch.diff(torch.tensor([*starts, sum(lengths)])).tolist()) == lengths
    (padded,) = list(both["padded"][1].get_train_dataloader())
    assert padded["input_ids"].shape == (4, lengths[-1]) and padded["attention_mask"].sum() == sum(lengths)
    assert Counter(fed_rows(trainer)) == Counter(fed_rows(both["padded"][1]))  # the same ids and labels


def test_one_step_has_the_same_loss_and_gradients_padded_and_padding_free(both):
    """The loss and every LoRA gradient of one step are the same (float tolerance) both ways: the
    block-diagonal mask keeps the rows laid end to end apart as padding does."""
    import torch

    (_, free), (_, padded) = both["auto"], both["padded"]
    weights = padded.model.state_dict()
    generator = torch.Generator().manual_seed(0)
    for name, value in weights.items():
        if "lora_B" in name:  # B starts at 0, which would leave every gradient of A at 0: make it count
            weights[name] = torch.randn(value.shape, generator=generator) * 0.5
    result = {}
    for name, trainer in (("padded", padded), ("padding-free", free)):
        trainer.model.load_state_dict(weights)
        trainer.model.train()
        trainer.model.zero_grad()
        (batch,) = list(trainer.get_train_dataloader())
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        result[name] = (loss.detach(), grads)
    (loss_a, grads_a), (loss_b, grads_b) = result["padded"], result["padding-free"]
    print(f"loss padded {loss_a.item():.6f}, padding-free {loss_b.item():.6f}")
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and any("lora_A" in n for n in grads_a)
    for name in grads_a:
        assert grads_a[name].abs().max() > 0, name
        # float32 sums in another order: off by a few 1e-6 of the largest gradient (rows attending to each
        # other would be off by its whole size)
        scale = grads_a[name].abs().max().item()
        assert (grads_b[name] - grads_a[name]).abs().max().item() <= 1e-4 * scale, name


# ---------------------------------------------------------------------------------- truncation

LONG_PROMPT = chat_row("tell me " * 100, "no")  # 800 bytes of prompt: cut at 620, nothing trained is left


@pytest.mark.parametrize("kind", ["jsonl", "tokenized"])
def test_rows_longer_than_max_length_train_the_same_ids_and_labels_either_way(kind, tmp_path, tiny_model_dir):
    """Padding-free rows are cut by glmtrain (TRL cuts only padded ones): the same cut ids and labels,
    and the same row dropped for keeping no trained token, from JSONL and from a tokenized file."""
    rows = [*TRAIN_ROWS, LONG_PROMPT]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    if kind == "tokenized":
        pytest.importorskip("pyarrow")
        from typer.testing import CliRunner

        from glmdata.cli import app

        parquet = tmp_path / "train.parquet"  # not cut: the run cuts it
        result = CliRunner().invoke(
            app, ["tokenize", str(data), "--tokenizer", str(tiny_model_dir), "-o", str(parquet)]
        )
        assert parquet.is_file(), result.stderr
        data = parquet
    fed = {}
    for name, setting in (("auto", None), ("padded", False)):
        prep = train_mod.prepare(settings(data, tmp_path / name, max_length=620, padding_free=setting), QUIET)
        assert prep.plan["tokens"]["truncated_rows"] >= 2 and prep.plan["tokens"]["dropped_rows"] == 1
        fed[prep.plan["batching"]["mode"]] = Counter(fed_rows(train_mod.build_trainer(prep)))
    assert fed.keys() == {"padding-free", "padded"}
    assert fed["padding-free"] == fed["padded"]
    assert sum(fed["padded"].values()) == len(rows) - 1  # the long prompt is dropped both ways
    cut = [labels for ids, labels in fed["padded"] if len(ids) == 620]
    assert cut and all(any(label != -100 for label in labels) for labels in cut)  # tool-call rows cut in the call


# ---------------------------------------------------------------------------------- the rule

CHATGLM = {
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "auto_map": {
        "AutoConfig": "configuration_chatglm.ChatGLMConfig",
        "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    },
}


def model_dir(root: Path, config: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return root


def batching(tmp_path: Path, config: dict, **settings) -> dict:
    cfg = cfgmod.merge(("test", {"model": str(model_dir(tmp_path / "model", config)), **settings}))
    return train_mod.choose_batching(cfg, train_mod.read_model_config(cfg.model, download=False))


@pytest.mark.parametrize("model_type", ["glm", "glm4", "glm4_moe"])
def test_models_of_transformers_that_mask_from_position_ids_train_padding_free(model_type, tmp_path):
    got = batching(tmp_path, {"model_type": model_type}, batch_size=4)
    assert got["mode"] == "padding-free"
    assert got["reason"] == f"padding-free: the model builds its attention masks from position_ids ({model_type})"


def test_batch_size_1_is_padded(tmp_path):
    assert batching(tmp_path, {"model_type": "glm"}, batch_size=1) == {
        "mode": "padded",
        "setting": None,
        "reason": "padded: batch size 1 (nothing to pad)",
    }
    forced = batching(tmp_path, {"model_type": "glm"}, batch_size=1, padding_free=True)
    assert forced["mode"] == "padding-free" and forced["reason"].endswith("batch size 1 gains nothing")


def test_a_remote_code_model_is_padded_and_padding_free_is_refused_on_it(tmp_path):
    got = batching(tmp_path, CHATGLM, batch_size=4)
    assert got["mode"] == "padded" and got["reason"] == "padded: remote-code model chatglm builds its own masks"
    # flash attention does not help: the remote code decides how it attends
    flash = {"model_init_kwargs": {"attn_implementation": "flash_attention_2", "trust_remote_code": True}}
    assert batching(tmp_path, CHATGLM, batch_size=4, sft=flash)["mode"] == "padded"
    for refused in ({"padding_free": True}, {"packing": True}):
        with pytest.raises(GlmtrainError) as e:
            batching(tmp_path, CHATGLM, batch_size=4, **refused)
        assert "remote-code model chatglm builds its own masks" in e.value.message
        assert "attend to each other" in e.value.message
        assert e.value.hint and "THUDM/glm-4-9b-chat-hf" in e.value.hint


def test_flash_attention_takes_the_rows_bounds_from_position_ids(tmp_path):
    flash = {"model_init_kwargs": {"attn_implementation": "flash_attention_2"}}
    got = batching(tmp_path, {"model_type": "glm4"}, batch_size=2, sft=flash)
    assert got == {
        "mode": "padding-free",
        "setting": None,
        "reason": "padding-free: flash_attention_2 takes each row's bounds from position_ids (glm4)",
    }
    native_glm_with_remote_code = {**CHATGLM, "model_type": "glm"}  # trust_remote_code not set: transformers' code
    assert batching(tmp_path, native_glm_with_remote_code, batch_size=2)["mode"] == "padding-free"


def test_explicit_settings_and_packing(tmp_path):
    assert batching(tmp_path, {"model_type": "glm"}, batch_size=4, padding_free=False)["reason"] == (
        "padded: --no-padding-free"
    )
    assert batching(tmp_path, {"model_type": "glm"}, batch_size=4, packing=True)["mode"] == "packing"
    with pytest.raises(GlmtrainError, match="cannot go with --no-padding-free"):
        batching(tmp_path, {"model_type": "glm"}, batch_size=4, packing=True, padding_free=False)
    unread = train_mod.choose_batching(cfgmod.merge(("test", {"batch_size": 4})), None)
    assert unread["mode"] == "padded" and "config.json was not read" in unread["reason"]


def test_the_cli_shows_the_choice_in_the_plan_and_refuses_padding_free_with_a_reason(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    common = ["run", data, "--dry-run", "--tracker", "none", "--batch-size", "4", "--eval-split", "0"]
    result = glmtrain_cli(*common, "--model", tiny_model_dir, "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["batching"]["mode"] == "padding-free"
    buffer = io.StringIO()
    train_mod.print_plan(plan, Console(file=buffer, width=300))
    assert (
        "batching    │ padding-free: the model builds its attention masks from position_ids (glm) " in buffer.getvalue()
    )
    remote = tmp_path / "chatglm"
    shutil.copytree(tiny_model_dir, remote)
    (remote / "config.json").write_text(json.dumps(CHATGLM), encoding="utf-8")
    refused = glmtrain_cli(*common, "--model", remote, "--padding-free")
    assert refused.exit_code == 2
    said = " ".join(refused.stderr.split())
    assert "--padding-free: remote-code model chatglm builds its own masks" in said and "drop --padding-free" in said
