"""``glmtrain run`` on tokenized files (``glmdata tokenize``) and on several datasets mixed by weight.

No mocks: files are made by ``glmdata tokenize`` with the tiny preset's tokenizer, and training runs
TRL's SFTTrainer on the 2-layer model for a couple of steps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from test_train_support import (
    CHAT_ROWS,
    EVAL_ROWS,
    INVALID_ROW,
    TRAIN_ROWS,
    glmtrain_cli,
    glmtrain_env,  # noqa: F401 - fixture
    tiny_model_dir,  # noqa: F401 - fixture
    tokenizer_only,  # noqa: F401 - fixture
    tool_call_row,
    write_jsonl,
)

from glmtrain import config as cfgmod
from glmtrain import train as train_mod

pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parents[1]
ADVERTISEGEN = REPO / "data" / "advertisegen_messages_sample.jsonl"
GLAIVE = REPO / "data" / "glaive_toolcall_zh_sample.json"
QUIET = Console(stderr=True, quiet=True)


def tokenize(source: Path, out: Path, tokenizer: Path, *args: str) -> Path:
    """``glmdata tokenize SOURCE --tokenizer DIR -o OUT ARGS``."""
    from typer.testing import CliRunner

    from glmdata.cli import app

    result = CliRunner().invoke(app, ["tokenize", str(source), "--tokenizer", str(tokenizer), "-o", str(out), *args])
    assert out.is_file(), result.stderr
    return out


def settings(data, out: Path, **overrides) -> cfgmod.TrainConfig:
    base = dict(
        data=data,
        model="tiny-random",
        output_dir=str(out),
        tracker="none",
        gradient_checkpointing=False,
        logging_steps=1,
        sft={"disable_tqdm": True},
    )
    return cfgmod.merge(("test", {**base, **overrides}))


def dry_plan(*args) -> dict:
    result = glmtrain_cli("run", *args, "--dry-run", "--json", "--tracker", "none")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------ tokenized files


def test_a_tokenized_file_trains_on_exactly_its_ids_and_labels(tmp_path, tiny_model_dir):
    import pyarrow.parquet as pq

    parquet = tokenize(ADVERTISEGEN, tmp_path / "train.parquet", tiny_model_dir, "--max-length", "256")
    table = pq.read_table(parquet)
    expected = {tuple(ids): labels for ids, labels in zip(table["input_ids"].to_pylist(), table["labels"].to_pylist())}
    assert any(len(ids) == 256 for ids in expected)  # rows were cut by tokenize, and the run keeps that cut

    cfg = settings(str(parquet), tmp_path / "out", eval_split=0, max_steps=2, gradient_accumulation_steps=1)
    prep = train_mod.prepare(cfg, QUIET)
    assert prep.plan["max_length"]["value"] == 256 and prep.plan["datasets"][0]["kind"] == "tokenized"
    trainer = train_mod.build_trainer(prep)
    seen = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(
            batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
        ):
            n = sum(mask)
            assert labels[:n] == expected[tuple(ids[:n])]  # the file's ids, with the file's labels
            seen += 1
    assert seen == table.num_rows
    trainer.train()
    assert trainer.state.global_step == 2


def test_a_tokenized_file_trains_through_the_cli_with_predictions_from_jsonl_eval_data(tmp_path, tiny_model_dir):
    parquet = tokenize(write_jsonl(tmp_path / "rows.jsonl", TRAIN_ROWS), tmp_path / "train.parquet", tiny_model_dir)
    held_out = write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    out = tmp_path / "out"
    result = glmtrain_cli(
        "run", parquet, "--model", "tiny-random", "--eval-data", held_out, "-o", out, "--max-steps", "2",
        "--grad-accum", "1", "--max-new-tokens", "4", "--tracker", "none", "--no-gradient-checkpointing", "--json",
        "--set", "sft.disable_tqdm=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["global_step"] == 2
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["reference"] for p in predictions] == ['get_weather\n{"city": "Rome"}']
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["train_file"]["kind"] == "tokenized" and report["train_file"]["rows"] == len(TRAIN_ROWS)
    assert report["eval_file"]["rows_in"] == 1


def _other_tokenizer(tmp_path: Path) -> Path:
    from tests.tiny_tokenizer import write_tiktoken_dir

    return write_tiktoken_dir(tmp_path / "other_tokenizer")


@pytest.mark.parametrize(
    ("made_with", "run_with", "said", "fix"),
    [
        (["--template", "glm-4-9b-chat-v2"], [], "template: the file has glmdata:glm-4-9b-chat-v2", "--template glm-4-9b-chat-v2"),
        (["--train-on", "all"], [], "train_on: the file has 'all', this run 'assistant'", "--train-on all"),
        (["--tokenizer", "other"], [], "tokenizer: the file has ", "--tokenizer (or --model) with the tokenizer"),
        (["--max-length", "128"], ["--max-length", "256"], "the file was cut at 128 tokens, this run asks for --max-length 256", "--max-length 128"),
        (["--max-length", "128"], ["--max-length", "none"], "this run asks for no cut", "--max-length 128"),
    ],
)  # fmt: skip
def test_a_file_made_otherwise_is_refused_before_any_weights_load(
    tmp_path, tiny_model_dir, tokenizer_only, made_with, run_with, said, fix
):
    args = list(made_with)
    tokenizer = tiny_model_dir
    if args[:2] == ["--tokenizer", "other"]:
        tokenizer, args = _other_tokenizer(tmp_path), []
    parquet = tokenize(write_jsonl(tmp_path / "rows.jsonl", TRAIN_ROWS), tmp_path / "train.parquet", tokenizer, *args)
    # not a dry run: the model directory has no weights, so getting past the check would fail otherwise
    result = glmtrain_cli(
        "run", parquet, "--model", tokenizer_only, "--tracker", "none", "-o", tmp_path / "out", *run_with
    )
    message = " ".join(result.stderr.split())
    assert result.exit_code == 1, message
    assert said in message and f"make the run match the file: {fix}" in message, message
    assert "it was made with the tokenizer " in message and "glmdata tokenize DATA --tokenizer " in message
    assert "Traceback" not in message and not (tmp_path / "out").exists()


def test_a_parquet_with_ids_but_no_provenance_is_refused(tmp_path, tokenizer_only):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2]], "assistant_masks": [[0, 1]], "row": [0]}), path)
    result = glmtrain_cli("run", path, "--model", tokenizer_only, "--dry-run")
    assert result.exit_code == 1 and "not glmdata's metadata" in result.stderr and "glmdata tokenize" in result.stderr


def test_a_file_cut_shorter_sets_max_length_auto(tmp_path, tiny_model_dir, tokenizer_only):
    parquet = tokenize(ADVERTISEGEN, tmp_path / "cut.parquet", tiny_model_dir, "--max-length", "200")
    plan = dry_plan(parquet, "--model", tokenizer_only)
    assert plan["max_length"]["value"] == 200 and plan["tokens"]["truncated_rows"] == 0
    assert plan["tokens"]["tokens_per_row"]["max"] == 200
    assert dry_plan(parquet, "--model", tokenizer_only, "--max-length", "200")["max_length"]["value"] == 200


def test_a_dry_run_on_a_tokenized_file_counts_what_the_jsonl_counts(tmp_path, tiny_model_dir, tokenizer_only):
    from glmdata.convert import convert_file
    from glmdata.io import write_jsonl as write_rows

    # the shipped Glaive sample: rows up to 67k tokens, some cut by max_length auto (4096), one dropped
    messages = tmp_path / "glaive.jsonl"
    write_rows([r.row for r in convert_file(GLAIVE) if r.ok], messages)
    parquet = tokenize(messages, tmp_path / "glaive.parquet", tiny_model_dir)
    jsonl_plan = dry_plan(messages, "--model", tokenizer_only, "--eval-split", "0")
    parquet_plan = dry_plan(parquet, "--model", tokenizer_only, "--eval-split", "0")
    print("glaive sample:", jsonl_plan["rows"], jsonl_plan["tokens"])
    assert jsonl_plan["tokens"]["truncated_rows"] > 0 and jsonl_plan["tokens"]["dropped_rows"] > 0
    for key in ("rows", "tokens", "max_length", "steps"):
        assert parquet_plan[key] == jsonl_plan[key], key
    # with a held-out split: chat and tool-call rows (the strata the ids tell apart) split the same way
    rows = write_jsonl(tmp_path / "rows.jsonl", TRAIN_ROWS + EVAL_ROWS + [TRAIN_ROWS[0]])  # and a duplicate
    rows_parquet = tokenize(rows, tmp_path / "rows.parquet", tiny_model_dir)
    for eval_split in ("0.3", "2"):
        jsonl_plan = dry_plan(rows, "--model", tokenizer_only, "--eval-split", eval_split)
        parquet_plan = dry_plan(rows_parquet, "--model", tokenizer_only, "--eval-split", eval_split)
        for key in ("rows", "tokens", "eval_tokens", "max_length", "steps"):
            assert parquet_plan[key] == jsonl_plan[key], (eval_split, key)
    one = dry_plan(rows_parquet, "--model", tokenizer_only, "--eval-split", "3", "--eval-rows", "1")
    assert one["rows"]["held_out"] >= 3 and one["rows"]["eval"] == 1 and one["eval_tokens"]["rows"] == 1


def test_tokenized_eval_data_measures_the_loss_and_says_predictions_are_off(tmp_path, tiny_model_dir, tokenizer_only):
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    held_out = tokenize(write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS), tmp_path / "eval.parquet", tiny_model_dir)
    result = glmtrain_cli("run", data, "--eval-data", held_out, "--model", tokenizer_only, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["rows"]["eval"] == 1 and plan["eval_tokens"]["rows"] == 1 and plan["steps"]["eval_every"]
    assert plan["predictions"]["rows"] == 0 and "--eval-data with messages" in plan["predictions"]["off"]
    assert "predictions: off: the held-out rows come from" in " ".join(result.stderr.split())
    quiet = glmtrain_cli(
        "run", data, "--eval-data", held_out, "--model", tokenizer_only, "--dry-run", "--num-predictions", "0"
    )
    assert "predictions: off" not in " ".join(quiet.stderr.split()).split("glmtrain plan")[0]


# ------------------------------------------------------------------------------ several datasets


@pytest.fixture
def two_files(tmp_path, glmtrain_env) -> tuple[Path, Path]:
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS + [INVALID_ROW])  # 6 valid rows, 1 rejected
    tools = write_jsonl(
        tmp_path / "tools.jsonl", [tool_call_row(c, t) for c, t in [("Rome", 1), ("Oslo", 2), ("Lima", 3), ("Pune", 4)]]
    )
    return chat, tools  # fmt: skip


def test_weights_draw_rows_per_epoch_and_the_plan_counts_each_dataset(two_files, tokenizer_only):
    chat, tools = two_files
    result = glmtrain_cli(
        "run", chat, tools, "--weights", "0.5,2.5", "--eval-split", "0", "--skip-invalid", "--model", tokenizer_only,
        "--dry-run", "--json", "--grad-accum", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    a, b = plan["datasets"]
    assert (a["path"], a["rows"], a["rejected"], a["weight"], a["train"]) == (str(chat), 6, 1, 0.5, 3)
    assert (b["path"], b["rows"], b["rejected"], b["weight"], b["train"]) == (str(tools), 4, 0, 2.5, 10)  # 2 x 4 + 2
    assert (a["share"], b["share"]) == (round(3 / 13, 4), round(10 / 13, 4))
    assert a["tokens"] > 0 and 0 < a["trained_tokens"] < a["tokens"] and a["trained_share"] + b["trained_share"] == 1
    assert plan["rows"]["train"] == 13 and plan["rows"]["left_out"] == 1 and plan["tokens"]["rows"] == 13
    assert plan["steps"]["total"] == 13 and plan["data"] == [str(chat), str(tools)]
    table = " ".join(result.stderr.split())
    assert "2 datasets: 13 rows to train on per epoch" in table
    assert "weight 0.5: 3 rows per epoch, 23.1% of the mix" in table
    assert "weight 2.5: 10 rows per epoch, 76.9% of the mix" in table


def test_the_same_seed_gives_the_same_training_order_and_another_seed_another(two_files, tmp_path, tiny_model_dir):
    chat, tools = two_files

    def order(seed: int) -> tuple[list, list]:
        cfg = settings(
            [str(chat), str(tools)], tmp_path / "out", weights=[1.5, 0.5], seed=seed, eval_split=0,
            skip_invalid=True, max_steps=1,
        )  # fmt: skip
        prep = train_mod.prepare(cfg, QUIET)
        drawn = list(zip(prep.train_dataset["dataset"], prep.train_dataset["row"]))
        trainer = train_mod.build_trainer(prep)
        fed = [ids for batch in trainer.get_train_dataloader() for ids in batch["input_ids"].tolist()]
        return drawn, fed

    first, again, other = order(1), order(1), order(2)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]  # other rows drawn, fed in another order
    drawn = first[0]
    assert sum(1 for k, _ in drawn if k == 0) == 9 and sum(1 for k, _ in drawn if k == 1) == 2  # 6 x 1.5, 4 x 0.5
    assert {r for k, r in drawn if k == 0} == set(range(6))  # every chat row at least once


def test_each_dataset_has_its_own_held_out_rows(two_files, tokenizer_only):
    chat, tools = two_files
    plan = dry_plan(chat, tools, "--skip-invalid", "--eval-split", "0.25", "--model", tokenizer_only)
    a, b = plan["datasets"]
    assert a["held_out"] >= 1 and b["held_out"] >= 1
    assert (a["train"], b["train"]) == (a["rows"] - a["held_out"], b["rows"] - b["held_out"])
    assert plan["rows"]["held_out"] == a["held_out"] + b["held_out"]


def test_tokenized_and_jsonl_files_mix(two_files, tmp_path, tiny_model_dir, tokenizer_only):
    chat, tools = two_files
    tools_parquet = tokenize(tools, tmp_path / "tools.parquet", tiny_model_dir)
    mixed = dry_plan(
        chat, tools_parquet, "--weights", "1,2", "--skip-invalid", "--eval-split", "0", "--model", tokenizer_only
    )
    plain = dry_plan(chat, tools, "--weights", "1,2", "--skip-invalid", "--eval-split", "0", "--model", tokenizer_only)
    assert [d["kind"] for d in mixed["datasets"]] == ["messages", "tokenized"]
    assert mixed["datasets"][1]["rejected"] is None and mixed["datasets"][1]["made_with"]["train_on"] == "assistant"
    for key in ("rows", "tokens", "max_length", "steps"):
        assert mixed[key] == plain[key], key


def test_a_config_file_lists_the_datasets_and_their_weights(two_files, tmp_path, tokenizer_only):
    chat, tools = two_files
    config = tmp_path / "mix.yaml"
    config.write_text(
        f"data:\n  - {chat}\n  - {tools}\nweights: [2, 1]\nskip_invalid: true\neval_split: 0\n", encoding="utf-8"
    )
    plan = dry_plan("--config", config, "--model", tokenizer_only)
    assert [(d["weight"], d["train"]) for d in plan["datasets"]] == [(2, 12), (1, 4)]
    flags = dry_plan(tools, "--config", config, "--model", tokenizer_only, "--weights", "3")  # DATA replaces data:
    assert [(d["path"], d["train"]) for d in flags["datasets"]] == [(str(tools), 12)]


def test_a_weight_count_that_does_not_match_stops_before_the_data_is_read(tmp_path, tokenizer_only):
    result = glmtrain_cli(
        "run", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--weights", "1,2,3", "--model", tokenizer_only
    )
    assert result.exit_code == 2 and "weights: 3 weights (1, 2, 3) for 2 data files" in result.stderr
    assert "cannot read" not in result.stderr
    bad = glmtrain_cli("run", tmp_path / "a.jsonl", "--weights", "0", "--model", tokenizer_only)
    assert bad.exit_code == 2 and "weights.0 must be greater than 0" in bad.stderr


def test_a_single_dataset_run_is_as_before(tmp_path, glmtrain_env, tokenizer_only):
    """One file: weight 1 is every training row once, in the file's order, no `dataset` column, and the
    config keeps `data` a path."""
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS + EVAL_ROWS)
    cfg = settings(str(data), tmp_path / "out", model=str(tokenizer_only))
    prep = train_mod.prepare(cfg, QUIET)
    rows = train_mod.read_rows(str(data), skip_invalid=False, console=None)
    train, held_out = train_mod.split_rows(rows, cfg.eval_split, cfg.seed)
    assert prep.train_dataset["row"] == [rows.indices[i] for i in train]
    assert prep.eval_dataset["row"] == [rows.indices[i] for i in held_out]
    assert prep.train_dataset.column_names == ["input_ids", "assistant_masks", "row"]
    weighted = train_mod.prepare(settings(str(data), tmp_path / "out", model=str(tokenizer_only), weights=[1]), QUIET)
    assert weighted.train_dataset["row"] == prep.train_dataset["row"]
    assert {k: v for k, v in weighted.plan.items() if k != "datasets"} == {
        k: v for k, v in prep.plan.items() if k != "datasets"
    }
    assert cfg.data == str(data) and "data: " + str(data) in cfgmod.dump(cfg)
    buffer = io.StringIO()
    train_mod.print_plan(prep.plan, Console(file=buffer, width=300))
    assert (
        f"{data}: {len(train)} rows to train on, {len(held_out)} held out" in buffer.getvalue()
        and "dataset 1" not in buffer.getvalue()
    )


def test_draw_is_whole_copies_plus_a_seeded_sample():
    import random

    rows = list(range(10))
    assert train_mod.draw(rows, 1, random.Random(0)) == rows
    twice = train_mod.draw(rows, 2.3, random.Random(0))
    assert len(twice) == 23 and twice[:20] == rows + rows and len(set(twice[20:])) == 3
    half = train_mod.draw(rows, 0.5, random.Random(0))
    assert len(half) == 5 and half == sorted(set(half))
    assert train_mod.draw(rows, 0.5, random.Random(0)) == half and train_mod.draw(rows, 0.5, random.Random(1)) != half


def test_tokenized_data_alone_checks_the_template_on_probe_conversations(tmp_path, tiny_model_dir, tokenizer_only):
    """No messages to render: the model's template is checked on the conversations glmtrain ships."""
    template_file = tokenizer_only / "chat_template.jinja"
    template_file.write_text(
        template_file.read_text(encoding="utf-8").replace("<|{{ item['role'] }}|>", "<|{{ item['role'] }}|> "),
        encoding="utf-8",
    )
    parquet = tokenize(write_jsonl(tmp_path / "rows.jsonl", TRAIN_ROWS), tmp_path / "train.parquet", tiny_model_dir)
    result = glmtrain_cli("run", parquet, "--model", tokenizer_only, "--dry-run")
    message = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "glmtrain's probe conversations, row 0: first difference at character" in message
    plan = dry_plan(parquet, "--model", tokenizer_only, "--allow-template-mismatch")
    assert plan["template"]["status"] == "differs" and plan["template"]["rows_from"] == "glmtrain's probe conversations"
