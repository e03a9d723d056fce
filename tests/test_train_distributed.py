"""Data parallelism through the Trainer's own distributed support, on CPU (gloo), and the shipped
accelerate configs.

The two-process tests launch real processes (``torchrun``, ``accelerate launch``) with the tiny
model; they are marked ``distributed`` (``pytest -m distributed`` runs only them, ``-m "not
distributed"`` skips them) and run in the default ``pytest``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_train_support import (
    REPO,
    chat_row,
    glmtrain_env,  # noqa: F401 - fixture
    tiny_model_dir,  # noqa: F401 - fixture
    write_jsonl,
)

from glmtrain.config import ACCELERATE_DIR, GlmtrainError
from glmtrain.train import check_launcher

# rows of one length (single digits, byte-level tokens): two ranks see twice one rank's tokens per step
EQUAL_ROWS = [chat_row(f"question {i}?", f"answer {i}.") for i in range(8)]
HELD_OUT = [chat_row("question 9?", "answer 9.")]

# Runs glmtrain's own CLI in each process and records, per rank, what the trainer saw: its world
# size and parallel mode, and the rows (token ids, padding left out) of every training batch.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from glmtrain import train
    from glmtrain.cli import main

    record_dir, argv = sys.argv[1], sys.argv[2:]
    seen, built = [], {}
    build_trainer = train.build_trainer

    def recording_build_trainer(prep, callbacks=None):
        trainer = build_trainer(prep, callbacks)
        built["trainer"] = trainer
        compute_loss = trainer.compute_loss

        def compute(model, inputs, *args, **kwargs):
            if model.training:
                rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
                seen.append({"step": trainer.state.global_step + 1, "rows": rows})
            return compute_loss(model, inputs, *args, **kwargs)

        trainer.compute_loss = compute
        return trainer

    train.build_trainer = recording_build_trainer
    try:
        main(argv)
    finally:
        if "trainer" in built:  # else glmtrain stopped before the weights loaded, and said why
            args = built["trainer"].args
            with open(f"{record_dir}/rank{args.process_index}.json", "w") as f:
                json.dump({"world_size": args.world_size, "parallel_mode": args.parallel_mode.value,
                           "process_index": args.process_index, "batches": seen}, f)
    """
)


def _env(glmtrain_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **glmtrain_env, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_torchrun_two_processes_train_different_rows_and_only_rank_0_writes(tmp_path, glmtrain_env, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", EQUAL_ROWS)
    held_out = write_jsonl(tmp_path / "eval.jsonl", HELD_OUT)
    out, records = tmp_path / "out", tmp_path / "records"
    records.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
            str(records), "run", str(data), "--eval-data", str(held_out), "--model", "tiny-random", "-o", str(out),
            "--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--logging-steps", "1",
            "--num-predictions", "1", "--max-new-tokens", "2", "--tracker", "offline", "--no-gradient-checkpointing",
            "--json", "--set", "sft.disable_tqdm=true",
        ],
        cwd=REPO, env=_env(glmtrain_env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in proc.stderr

    ranks = [json.loads((records / f"rank{i}.json").read_text(encoding="utf-8")) for i in (0, 1)]
    # the trainer of each process sees two processes, in DDP
    assert [(r["world_size"], r["parallel_mode"], r["process_index"]) for r in ranks] == [
        (2, "distributed", 0),
        (2, "distributed", 1),
    ]
    # each rank trained one row per step, and never the row the other rank trained
    by_step = [{b["step"]: [tuple(row) for row in b["rows"]] for b in r["batches"]} for r in ranks]
    assert sorted(by_step[0]) == sorted(by_step[1]) == [1, 2]
    for step in (1, 2):
        assert len(by_step[0][step]) == len(by_step[1][step]) == 1
        assert not set(by_step[0][step]) & set(by_step[1][step]), f"both ranks trained the same row at step {step}"
    # the tokens the trainer counts per step are both ranks' together: twice one rank's
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    counted = {h["step"]: h["num_tokens"] for h in state["log_history"] if "num_tokens" in h and "loss" in h}
    one_rank = {step: len(by_step[0][step][0]) for step in (1, 2)}
    assert one_rank[1] == len(by_step[1][1][0])  # the rows have one length
    assert counted[1] == 2 * one_rank[1]
    assert counted[2] - counted[1] == 2 * one_rank[2]
    print(f"2 processes: {one_rank[1]} tokens per rank and step, {counted[1]} counted by the trainer at step 1")

    # the plan's effective batch is the trainer's
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert plan["steps"]["processes"] == 2 and plan["steps"]["effective_batch"] == 2
    # only the main process speaks and writes: one summary, one plan table, one prediction, one SwanLab run
    summary = json.loads(proc.stdout)  # exactly one JSON document
    assert summary["processes"] == 2 and summary["global_step"] == 2
    assert proc.stderr.count("glmtrain plan") == 1
    predictions = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(p)["step"] for p in predictions] == [2]
    assert len(list((out / "swanlog").glob("run-*"))) == 1
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.distributed
def test_accelerate_launch_starts_two_processes_on_cpu(tmp_path, glmtrain_env, tiny_model_dir):
    """``accelerate launch --multi_gpu`` starts the processes with torchrun; without a GPU the
    trainer runs them on the CPU with gloo (the dry run builds the trainer's arguments, so the plan
    counts the processes the trainer sees)."""
    data = write_jsonl(tmp_path / "train.jsonl", EQUAL_ROWS)
    common = ["-m", "glmtrain", "run", str(data), "--model", "tiny-random", "--dry-run", "--json"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    proc = subprocess.run(
        [*launch, "--multi_gpu", "--num_processes", "2", *common],
        cwd=REPO, env=_env(glmtrain_env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    plan = json.loads(proc.stdout)  # printed once, by the main process
    assert plan["steps"]["processes"] == 2
    assert plan["steps"]["effective_batch"] == 1 * 2 * 2  # batch 1 x 2 accumulation x 2 processes

    # `--cpu` starts a single process whatever --num_processes says: glmtrain stops and says what to run
    alone = subprocess.run(
        [*launch, "--cpu", "--num_processes", "2", *common],
        cwd=REPO, env=_env(glmtrain_env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert alone.returncode != 0 and "returned non-zero exit status 2" in alone.stderr, alone.stderr[-4000:]
    assert "accelerate launch --cpu started 1 process" in alone.stderr
    assert "torchrun --standalone --nproc_per_node N" in alone.stderr


def test_a_single_cpu_process_from_a_multi_process_request_is_refused():
    # what `accelerate launch --cpu --num_processes 2` gives the process it starts
    with pytest.raises(GlmtrainError, match="accelerate launch --cpu started 1 process"):
        check_launcher({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    check_launcher({"ACCELERATE_USE_CPU": "True"})  # --num_processes 1
    check_launcher({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})  # mpirun
    check_launcher({"MASTER_ADDR": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})  # torchrun
    check_launcher({})


# ------------------------------------------------------------------------- shipped configs


def _launch_environment(config_file: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file FILE`` gives the processes it starts, made by
    accelerate's own code (nothing is started)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "glmtrain", "run", "x"])
    # what `accelerate launch` does first: merge the config file into the arguments
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


@pytest.mark.parametrize("name", ["zero2", "zero3", "fsdp"])
def test_shipped_accelerate_configs_load_in_accelerate(name):
    """Each shipped config goes through accelerate's config loading and launch set-up, and the plugin
    the launched process builds from it (DeepSpeedPlugin, FullyShardedDataParallelPlugin) has its settings."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin, patch_environment

    path = ACCELERATE_DIR / f"{name}.yaml"
    config = load_config_from_file(str(path))
    env = _launch_environment(path)
    with patch_environment(**env):
        if name.startswith("zero"):
            assert config.distributed_type == DistributedType.DEEPSPEED
            plugin = DeepSpeedPlugin()
            assert plugin.zero_stage == int(name[-1])
            # gradient accumulation and micro-batch come from glmtrain's settings, not the launcher
            assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
            assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
            if name == "zero3":
                assert plugin.zero3_init_flag
                assert plugin.deepspeed_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
        else:
            assert config.distributed_type == DistributedType.FSDP
            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2
            assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # the adapter is saved whole
            assert plugin.activation_checkpointing
            assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


@pytest.mark.parametrize("name", ["ds_zero2", "ds_zero3"])
def test_shipped_deepspeed_json_files_load_in_accelerate(name):
    from accelerate.utils import DeepSpeedPlugin

    path = ACCELERATE_DIR / f"{name}.json"
    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    assert plugin.zero_stage == int(name[-1])
    assert plugin.hf_ds_config.is_zero3() == (name == "ds_zero3")
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_deepspeed_json_files_take_the_trainer_settings(name, tmp_path):
    """With deepspeed installed, transformers fills the JSON files' ``auto`` values from the trainer's
    settings (what ``--deepspeed`` does)."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed: the transformers side of --deepspeed (filling 'auto') is not checked")
    from transformers import TrainingArguments

    path = ACCELERATE_DIR / f"ds_{name}.json"
    args = TrainingArguments(
        output_dir=str(tmp_path), deepspeed=str(path), per_device_train_batch_size=3, gradient_accumulation_steps=5
    )
    filled = args.hf_deepspeed_config.config
    assert filled["train_micro_batch_size_per_gpu"] == 3
    assert filled["zero_optimization"]["stage"] == int(name[-1])
