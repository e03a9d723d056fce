"""The ``glmtrain`` command without training: help, recipes, configs, validation, template check, plan.

Nothing here loads model weights; the tiny preset's tokenizer is enough (a directory holding only
the tokenizer proves that ``--dry-run`` never reads weights).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train_support import (
    EVAL_ROWS,
    INVALID_ROW,
    REPO,
    TRAIN_ROWS,
    chat_row,
    glmtrain_cli,
    glmtrain_env,  # noqa: F401 - fixture
    glmtrain_subprocess,
    tiny_model_dir,  # noqa: F401 - fixture
    tokenizer_only,  # noqa: F401 - fixture
    write_jsonl,
)

from glmdata.render import load_template
from glmtrain import config as cfgmod
from glmtrain.callbacks import compare_calls, parse_tool_call, tracker_mode
from glmtrain.config import GlmtrainError


@pytest.fixture
def data(tmp_path, glmtrain_env) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS + EVAL_ROWS)


# ------------------------------------------------------------------------------ help and imports


def test_help_is_instant_and_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from glmtrain.cli import main\n"
        "for argv in (['--help'], ['run', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft', 'swanlab') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_python_dash_m_glmtrain_works():
    out = glmtrain_subprocess("--help")
    assert out.returncode == 0
    assert "run" in out.stdout and "merge" in out.stdout and "chat" in out.stdout


def _command_flags() -> dict[str, set[str]]:
    import typer

    from glmtrain.cli import app

    group = typer.main.get_command(app)
    flags = {
        name: {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}
        for name, cmd in group.commands.items()
    }
    flags[""] = {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)}
    return flags


def test_readme_flags_exist_in_help():
    """Every --flag the README mentions is one a command accepts, and every run setting is documented."""
    readme = (REPO / "glmtrain" / "README.md").read_text(encoding="utf-8")
    flags = _command_flags()
    known = set().union(*flags.values()) | {"--help"}
    documented = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9_-]*)", readme))
    # other tools' flags, in the examples: accelerate launch, torchrun, hf download
    external = {
        "--config_file", "--num_processes", "--nproc_per_node", "--local-dir", "--standalone", "--multi_gpu", "--cpu",
        "--mpirun_hostfile",
    }  # fmt: skip
    missing = documented - known - external
    assert not missing, f"README mentions flags the commands do not have: {sorted(missing)}"
    undocumented = {f for f in flags["run"] if not f.startswith("--no-")} - documented
    assert not undocumented, f"run flags missing from the README: {sorted(undocumented)}"
    for command in ("merge", "chat", "recipes", "accelerate-config"):
        assert f"glmtrain {command}" in readme
    # the help text renders for every command
    for command in ("run", "merge", "chat", "recipes", "accelerate-config"):
        assert glmtrain_cli(command, "--help").exit_code == 0


# ------------------------------------------------------------------------ recipes and configs


def test_recipes_are_listed_and_resolve_to_valid_configs():
    out = glmtrain_cli("recipes")
    assert out.exit_code == 0
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert {"toolcall", "alpaca"} <= set(names)
    tool = cfgmod.merge(("recipe", cfgmod.load_recipe("toolcall")))
    assert (tool.lora_r, tool.lora_alpha, tool.lora_dropout) == (8, 32, 0.1)
    assert tool.lora_target_modules == ["q_proj", "k_proj", "v_proj"]
    assert (tool.learning_rate, tool.batch_size, tool.gradient_accumulation_steps, tool.max_steps) == (5e-4, 1, 2, 600)
    alpaca = cfgmod.merge(("recipe", cfgmod.load_recipe("alpaca")))
    assert (alpaca.num_epochs, alpaca.batch_size, alpaca.eval_split) == (3, 2, 0.05)
    assert (alpaca.eval_steps, alpaca.save_steps) == (0.1, 0.1)
    shown = glmtrain_cli("recipes", "alpaca")
    assert shown.exit_code == 0 and "num_epochs: 3" in shown.stdout
    assert glmtrain_cli("recipes", "nope").exit_code == 2


def test_defaults_are_the_tool_call_tutorials():
    cfg = cfgmod.TrainConfig()
    assert cfg.model == "THUDM/glm-4-9b-chat-hf"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.1)
    assert cfg.lora_target_modules == ["q_proj", "k_proj", "v_proj"]
    assert (cfg.learning_rate, cfg.batch_size, cfg.gradient_accumulation_steps, cfg.logging_steps) == (5e-4, 1, 2, 10)
    assert cfg.eval_split > 0 and cfg.dtype == "auto"


def test_precedence_recipe_then_config_then_flags(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learning_rate: 1.0e-4\nmax_steps: 50\nsft:\n  weight_decay: 0.01\n", encoding="utf-8")
    cfg = cfgmod.merge(
        ("recipe toolcall", cfgmod.load_recipe("toolcall")),
        (str(config_file), cfgmod.load_config_file(config_file)),
        ("flags", {"max_steps": "7", "sft": {"warmup_steps": 1}}),
    )
    assert cfg.learning_rate == 1e-4  # config file beats recipe
    assert cfg.max_steps == 7  # flag beats config file
    assert cfg.gradient_accumulation_steps == 2  # from the recipe
    assert cfg.sft == {"weight_decay": 0.01, "warmup_steps": 1}  # merged key by key


def test_bad_settings_are_usage_errors(tmp_path, data):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1\n", encoding="utf-8")
    out = glmtrain_cli("run", data, "--config", bad, "--dry-run")
    assert out.exit_code == 2
    assert "unknown setting 'learning_rat'" in out.stderr
    assert "Traceback" not in out.stderr
    assert "did you mean 'learning_rate'?" in out.stderr
    assert glmtrain_cli("run", tmp_path / "missing.jsonl", "--dry-run").exit_code == 2
    flag = glmtrain_cli("run", data, "--set", "lora_r=many", "--dry-run")
    assert flag.exit_code == 2 and "--set lora_r=many: lora_r must be a valid integer" in flag.stderr
    merge_dtype = glmtrain_cli("merge", tmp_path, "--dtype", "fp8")
    assert merge_dtype.exit_code == 2
    assert "--dtype must be one of auto, bfloat16, float16, float32" in merge_dtype.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_length": "long"}, "flags: max_length must be a positive number, 'auto' or 'none', got 'long'"),
        ({"max_length": 0}, "flags: max_length must be a positive number, 'auto' or 'none', got 0"),
        ({"tracker": "wandb"}, "flags: tracker must be 'auto', 'cloud', 'offline' or 'none', got 'wandb'"),
        ({"dtype": "fp8"}, "flags: dtype must be 'auto', 'bfloat16', 'float16' or 'float32', got 'fp8'"),
        ({"train_on": "every"}, "flags: train_on must be 'assistant', 'all' or 'last', got 'every'"),
        ({"lora_dropout": 1}, "flags: lora_dropout must be less than 1, got 1"),
        ({"batch_size": 0}, "flags: batch_size must be greater than 0, got 0"),
        ({"max_steps": 0}, "flags: max_steps must be a positive number of steps, or -1 to train for num_epochs, got 0"),
        ({"learning_rate": "nan"}, "flags: learning_rate must be a finite number, got 'nan'"),
        ({"eval_steps": -0.5}, "flags: eval_steps must be greater than or equal to 0, got -0.5"),
        ({"seed": 2**32}, "flags: seed must be less than 4294967296, got 4294967296"),
        ({"lora_target_modules": ""}, "flags: lora_target_modules must have at least 1 item"),
        ({"packing": "maybe"}, "flags: packing must be a valid boolean"),
        ({"sft": [1]}, "flags: sft must be a valid dictionary, got [1]"),
        ({"lora_r": None}, "flags: lora_r needs a value"),
    ],
)
def test_a_wrong_value_names_the_key_what_is_allowed_and_what_was_given(settings, message):
    with pytest.raises(GlmtrainError) as caught:
        cfgmod.merge(("flags", settings))
    assert caught.value.message.startswith(message)
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message


def test_the_error_names_the_layer_it_comes_from():
    with pytest.raises(GlmtrainError) as caught:
        cfgmod.merge(("recipe toolcall", cfgmod.load_recipe("toolcall")), ("mine.yaml", {"batch_size": "0"}))
    assert caught.value.message.startswith("mine.yaml: batch_size")
    with pytest.raises(GlmtrainError) as caught:
        cfgmod.merge(("mine.yaml", {"max_step": 5}), ("flags", {}))
    assert caught.value.message == "mine.yaml: unknown setting 'max_step'" and "'max_steps'" in caught.value.hint


def test_text_from_flags_and_yaml_becomes_typed_settings(tmp_path):
    cfg = cfgmod.merge(
        ("flags", {
            "data": tmp_path / "train.jsonl", "max_length": "none", "lora_target_modules": "q_proj, v_proj,",
            "packing": "yes", "eval_split": "20.0", "logging_steps": "0.5", "learning_rate": "1e-4", "seed": "7",
            "run_name": 2024, "description": "recipe keys that are not settings are skipped",
        }),
    )  # fmt: skip
    assert cfg.data == str(tmp_path / "train.jsonl") and cfg.max_length is None and cfg.packing is True
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.eval_split == 20 and isinstance(cfg.eval_split, int)  # a number of rows, not a fraction
    assert (cfg.logging_steps, cfg.learning_rate, cfg.seed, cfg.run_name) == (0.5, 1e-4, 7, "2024")
    assert cfgmod.merge(("flags", {"max_length": " Auto "})).max_length == "auto"
    assert cfgmod.merge(("flags", {"max_length": "512"})).max_length == 512
    assert cfgmod.merge(("flags", {"max_length": "0"})).max_length is None  # --max-length 0: no cap
    saved = cfgmod.merge(("saved", yaml.safe_load(cfgmod.dump(cfg))))
    assert saved == cfg  # glmtrain.yaml reads back as the same settings
    with pytest.raises(ValueError, match="greater than 0"):
        cfg.lora_r = 0  # assignment is checked too


def test_set_beats_flags_and_reaches_the_plan(data, tokenizer_only):
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--dry-run", "--json", "--eval-split", "0", "--lora-r", "4",
        "--set", "lora_r=16", "--set", "lora_target_modules=[q_proj, v_proj]", "--set", "max_length=none",
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["lora"]["r"] == 16 and plan["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert plan["max_length"]["setting"] is None and plan["max_length"]["value"] is None


def test_accelerate_configs_are_shipped_and_parse():
    for name in ("zero2", "zero3", "fsdp", "ds_zero2", "ds_zero3"):
        out = glmtrain_cli("accelerate-config", name)
        assert out.exit_code == 0, out.stderr
        path = Path(out.stdout.strip())
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        assert data
        if name.startswith("zero"):
            assert data["distributed_type"] == "DEEPSPEED"
            assert data["deepspeed_config"]["zero_stage"] == int(name[-1])
            # gradient accumulation must come from the trainer ("auto"), not the launcher
            assert "gradient_accumulation_steps" not in data["deepspeed_config"]
        if name == "fsdp":
            assert data["distributed_type"] == "FSDP"
    assert glmtrain_cli("accelerate-config", "zero9").exit_code == 2


# ------------------------------------------------------------------ validation before weights


def test_invalid_rows_stop_the_run_before_the_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", TRAIN_ROWS + [INVALID_ROW])
    # the model does not exist: reaching it would be exit 2; the data check stops first with exit 1
    out = glmtrain_cli("run", data, "--model", tmp_path / "no-model-here", "-o", tmp_path / "out", "--tracker", "none")
    assert out.exit_code == 1, out.stderr
    assert "1 of 9 rows would be rejected" in out.stderr
    assert "observation-without-call" in out.stderr  # glmdata's report is shown
    assert "--skip-invalid" in out.stderr
    assert not (tmp_path / "out").exists()
    assert "Traceback" not in out.stderr


def test_skip_invalid_trains_on_valid_rows_and_says_how_many_were_left_out(tmp_path, tokenizer_only):
    data = write_jsonl(tmp_path / "bad.jsonl", TRAIN_ROWS + [INVALID_ROW])
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--skip-invalid", "--dry-run", "--json", "--eval-split", "0"
    )
    assert out.exit_code == 0, out.stderr
    assert "left out 1 of 9 rows" in out.stderr
    plan = json.loads(out.stdout)
    assert plan["rows"] == {"valid": 8, "left_out": 1, "train": 8, "held_out": 0, "eval": 0, "eval_rows": "auto"}


def test_dry_run_prints_the_plan_without_weights(tmp_path, tokenizer_only):
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    held_out = write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    out = glmtrain_cli(
        "run", data, "--eval-data", held_out, "--model", tokenizer_only, "--dry-run", "--json",
        "--batch-size", "2", "--grad-accum", "2", "--num-epochs", "3",
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["rows"]["train"] == 8 and plan["rows"]["eval"] == 1
    tokens = plan["tokens"]
    assert tokens["rows"] == 8 and 0 < tokens["trained_tokens"] < tokens["tokens"]
    assert tokens["truncated_rows"] == 0
    assert plan["max_length"]["setting"] == "auto" and plan["max_length"]["value"] >= plan["max_length"]["longest_row"]
    # 8 rows, batch 2, accumulation 2: 2 steps per epoch, 3 epochs
    assert plan["steps"]["per_epoch"] == 2 and plan["steps"]["total"] == 6 and plan["steps"]["effective_batch"] == 4
    assert plan["template"]["status"] == "same"
    assert "glmtrain plan" in out.stderr  # the table is for people, on stderr


def test_short_max_length_warns_with_the_share_cut(data, tokenizer_only):
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--dry-run", "--json", "--max-length", "64", "--eval-split", "0"
    )
    assert out.exit_code == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["tokens"]["truncated_rows"] > 0 and plan["tokens"]["trained_tokens_cut"] > 0
    assert re.search(r"max_length 64 cuts \d+ of 9 training rows \(\d+\.\d%\)", " ".join(out.stderr.split()))
    nothing_left = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--dry-run", "--max-length", "4", "--eval-split", "0"
    )
    assert nothing_left.exit_code == 1
    assert "leaves no training row with a trained token" in nothing_left.stderr


def test_template_mismatch_stops_and_shows_the_first_difference(data, tokenizer_only):
    config_file = tokenizer_only / "chat_template.jinja"
    config_file.write_text(
        config_file.read_text(encoding="utf-8").replace("<|{{ item['role'] }}|>", "<|{{ item['role'] }}|> "),
        encoding="utf-8",
    )
    out = glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run")
    assert out.exit_code == 1
    assert "first difference at character" in out.stderr
    assert "--allow-template-mismatch" in out.stderr
    said = " ".join(out.stderr.split())
    assert "(not a template glmdata knows)" in said and "glm-4-0414, glm-4.5, glm-4.6" in said
    allowed = glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run", "--json", "--allow-template-mismatch")
    assert allowed.exit_code == 0, allowed.stderr
    assert json.loads(allowed.stdout)["template"]["status"] == "differs"
    own = glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run", "--json", "--template", "model")
    assert own.exit_code == 0, own.stderr
    assert json.loads(own.stdout)["template"]["status"] == "same"


def test_a_family_template_is_compared_in_the_input_shape_it_reads(tmp_path, tokenizer_only, glmtrain_env):
    """GLM-4-0414 takes tools as the ``tools`` variable: the model's template is given the rows in
    that shape (glmdata.families.template_input), so its training variant renders the same."""
    (tokenizer_only / "chat_template.jinja").write_text(load_template("glm-4-0414").text, encoding="utf-8")
    data = Path(__file__).parent.parent / "data" / "openai_toolcall_sample.jsonl"
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--dry-run", "--json", "--template", "glm-4-0414.generation",
        "--eval-split", "0",
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    check = json.loads(out.stdout)["template"]
    assert check["status"] == "same" and check["rows_checked"] >= 1, check


def test_a_glm_4_5_tokenizer_plans_with_its_own_template_and_masks(tmp_path, tokenizer_only, glmtrain_env):
    """A GLM-4.5 tokenizer (its template, <think> and </think> as special tokens): the dry run
    recognises the template with no flag and counts the trained tokens of reasoning rows."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_only)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tok.chat_template = load_template("glm-4.5").text
    target = tmp_path / "glm45_tokenizer"
    tok.save_pretrained(target)
    data = Path(__file__).parent.parent / "data" / "reason_tool_use_demo_50.jsonl"
    out = glmtrain_cli("run", data, "--model", target, "--dry-run", "--json", "--eval-split", "0")
    assert out.exit_code == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["template"]["status"] == "same" and plan["template"]["training_template"] == "glmdata:glm-4.5"
    assert plan["rows"]["train"] == 50 and 0 < plan["tokens"]["trained_tokens"] < plan["tokens"]["tokens"]


def test_offline_hub_id_gives_a_clear_error(data, glmtrain_env):
    out = glmtrain_subprocess(
        "run", data, "--model", "no-such-org/no-such-model", "--dry-run", env={"HF_HUB_OFFLINE": "1"}
    )
    assert out.returncode == 2, out.stderr
    assert "hf download no-such-org/no-such-model --local-dir" in out.stderr
    assert "--model" in out.stderr
    assert "Traceback" not in out.stderr
    missing_dir = glmtrain_cli("run", data, "--model", "./no/such/dir", "--dry-run")
    assert missing_dir.exit_code == 2 and "no such directory" in missing_dir.stderr


def test_held_out_split_is_glmdatas_stratified_split(data):
    from glmtrain.train import read_rows, split_rows

    rows = read_rows(str(data), skip_invalid=False, console=None)
    train, held_out = split_rows(rows, 0.1, seed=42)
    assert sorted(train + held_out) == list(range(len(TRAIN_ROWS) + len(EVAL_ROWS)))
    kinds = {"system" if rows.rows[i]["messages"][0]["role"] == "system" else "chat" for i in held_out}
    assert kinds == {"system", "chat"}  # tool-call rows and plain rows are both held out
    assert split_rows(rows, 0.1, seed=42) == (train, held_out)  # deterministic
    assert split_rows(rows, 0, seed=42) == (list(range(9)), [])


def test_load_in_4bit_without_a_gpu_is_a_clear_error(data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is there")
    out = glmtrain_cli(
        "run", data, "--model", "tiny-random", "--load-in-4bit", "-o", tmp_path / "out", "--tracker", "none"
    )
    assert out.exit_code == 2
    assert "needs a CUDA GPU and the bitsandbytes package" in out.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- small pieces


def test_tracker_mode_never_needs_a_login(glmtrain_env, monkeypatch):
    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    monkeypatch.delenv("SWANLAB_MODE", raising=False)
    assert tracker_mode("none") is None
    assert tracker_mode("offline") == "offline"
    assert tracker_mode("auto") == "offline"  # not logged in: offline, no prompt
    with pytest.raises(GlmtrainError, match="SwanLab login"):
        tracker_mode("cloud")
    monkeypatch.setenv("SWANLAB_API_KEY", "x" * 21)
    assert tracker_mode("auto") == "online"
    monkeypatch.setenv("SWANLAB_MODE", "disabled")
    assert tracker_mode("auto") is None


def test_parse_and_compare_tool_calls():
    assert parse_tool_call('get_weather\n{"city": "Rome"}') == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert parse_tool_call("\nIt is sunny.") is None
    assert parse_tool_call("") is None
    broken = parse_tool_call("get_weather\n{city")
    assert broken["name"] == "get_weather" and broken["arguments"] is None
    ref = {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert compare_calls({"name": "get_weather", "arguments": {"city": "Rome"}}, ref)["call_match"]
    assert compare_calls({"name": "get_weather", "arguments": {"city": "Oslo"}}, ref) == {
        "name_match": True,
        "arguments_match": False,
        "call_match": False,
    }
    assert not compare_calls(None, ref)["name_match"]


def test_without_the_train_extra_glmtrain_says_how_to_install_it(tmp_path: Path) -> None:
    """glmdata installs without torch; glmtrain then stops with the install command, no traceback."""
    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    # a fresh interpreter in which transformers (and torch) cannot be imported, as after `pip install glmdata`
    code = (
        "import sys; sys.modules['transformers'] = None; sys.modules['torch'] = None; "
        "from glmtrain.cli import main; sys.argv = ['glmtrain', 'run', sys.argv[1], '--dry-run']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(data)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "glmtrain needs the training dependencies" in proc.stderr and "pip install 'glmdata[train]'" in proc.stderr


# ------------------------------------------------------------------ the dry run checks everything


def test_an_unknown_sft_key_fails_before_the_data_is_read(tmp_path, tokenizer_only):
    data = write_jsonl(tmp_path / "bad.jsonl", TRAIN_ROWS + [INVALID_ROW])  # rejected rows would be exit 1
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "--dry-run", "--set", "sft.learnin_rate=1e-4", "--set", "sft.seed=3"
    )
    assert out.exit_code == 2, out.stderr
    error, fix = out.stderr.strip().splitlines()
    assert error == "error: --set sft.learnin_rate=1e-4: sft.learnin_rate is not an SFTConfig field"
    assert fix.startswith("fix: did you mean sft.learning_rate? SFTConfig's fields: ")
    assert "per_device_train_batch_size" in fix and "eval_delay" in fix
    from_file = tmp_path / "c.yaml"
    from_file.write_text("sft:\n  warmup_ratioo: 0.1\n", encoding="utf-8")
    out = glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run", "--config", from_file)
    assert out.exit_code == 2 and f"error: {from_file}: sft.warmup_ratioo is not an SFTConfig field" in out.stderr


def test_a_wrong_sft_value_fails_in_the_dry_run(data, tokenizer_only):
    out = glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run", "--set", "sft.lr_scheduler_type=zigzag")
    assert out.exit_code == 2, out.stderr
    assert "invalid training settings" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 2


def test_tracker_cloud_without_a_login_fails_before_validation(tmp_path, glmtrain_env, monkeypatch):
    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    monkeypatch.delenv("SWANLAB_MODE", raising=False)
    data = write_jsonl(tmp_path / "bad.jsonl", TRAIN_ROWS + [INVALID_ROW])
    out = glmtrain_cli("run", data, "--model", tmp_path / "no-model", "--tracker", "cloud", "--dry-run")
    assert out.exit_code == 2, out.stderr  # not 1 (the data) nor the missing model: nothing was read
    assert "--tracker cloud needs a SwanLab login" in out.stderr
    assert "would be rejected" not in out.stderr


def test_resume_latest_without_a_checkpoint_fails_in_the_dry_run(data, tokenizer_only, tmp_path):
    out = glmtrain_cli(
        "run", data, "--model", tokenizer_only, "-o", tmp_path / "empty", "--resume", "latest", "--dry-run"
    )
    assert out.exit_code == 2 and "--resume latest: no checkpoint" in out.stderr


def test_dry_run_with_a_tokenizer_needs_no_model(data, tokenizer_only, glmtrain_env):
    """--tokenizer DIR plans with real token counts for a hub model that is not here; the hub is not asked."""
    own = json.loads(glmtrain_cli("run", data, "--model", tokenizer_only, "--dry-run", "--json").stdout)
    out = glmtrain_subprocess(
        "run", data, "--model", "THUDM/glm-4-9b-chat-hf", "--tokenizer", tokenizer_only, "--dry-run", "--json",
        env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["tokens"] == own["tokens"] and plan["tokens"]["tokens"] > 0
    assert plan["model"] == "THUDM/glm-4-9b-chat-hf" and plan["tokenizer"] == str(tokenizer_only)
    assert "does not answer" not in out.stderr


# ------------------------------------------------------------------------------- offline hub


def test_an_unreachable_hub_fails_in_seconds(data, glmtrain_env):
    """Without HF_HUB_OFFLINE, a hub that does not answer costs one probe, not a minute of retries."""
    import time

    started = time.monotonic()
    out = glmtrain_subprocess(
        "run", data, "--model", "no-such-org/no-such-model", "--dry-run",
        env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},  # connection refused: hub retries it
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert "does not answer" in out.stderr and "there is no cached copy" in out.stderr
    assert "hf download no-such-org/no-such-model --local-dir ./no-such-model" in out.stderr
    assert "Traceback" not in out.stderr
    print(f"unreachable hub: exit 2 after {elapsed:.1f} s")
    assert elapsed < 30  # python start and imports; the hub's retries alone took about 50 s


def test_an_unreachable_hub_uses_the_cached_copy(data, glmtrain_env, tokenizer_only, tmp_path):
    """A model in the Hugging Face cache is used from there, found without the network."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--some-org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tokenizer_only, snapshot)
    (cache / "models--some-org--tiny" / "refs").mkdir()
    (cache / "models--some-org--tiny" / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    for offline in ({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"}):
        out = glmtrain_subprocess(
            "run", data, "--model", "some-org/tiny", "--dry-run", "--json", env={"HF_HUB_CACHE": str(cache), **offline}
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["model_path"] == str(snapshot)
        assert "using the cached copy of some-org/tiny" in out.stderr


# ------------------------------------------------------------------------ schedule and words


def _plan(data: Path, model: Path, *args: str) -> dict:
    out = glmtrain_cli("run", data, "--model", model, "--dry-run", "--json", *map(str, args))
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def test_a_short_run_logs_step_1_and_evaluates_once_at_its_first_checkpoint(tmp_path, tokenizer_only):
    from glmtrain import train

    data = write_jsonl(tmp_path / "train.jsonl", [chat_row(f"question {i}?", f"answer {i}.") for i in range(40)])
    plan = _plan(data, tokenizer_only, "--max-steps", "5", "--eval-split", "20")
    steps = plan["steps"]
    # the default fractions (0.1) of 5 steps would evaluate and save at every step
    assert (steps["total"], steps["save_every"], steps["eval_every"], steps["first_eval"]) == (5, 5, 5, 5)
    assert steps["log_every"] == 5 and steps["log_first_step"]
    # an evaluation reads no more rows than the 5 x 2 trained between two evaluations
    assert plan["rows"]["held_out"] >= 15 and plan["rows"]["eval"] == 10
    assert (
        _plan(data, tokenizer_only, "--max-steps", "5", "--eval-split", "20", "--eval-rows", "0")["rows"]["eval"]
        == plan["rows"]["held_out"]
    )
    assert (
        _plan(data, tokenizer_only, "--max-steps", "5", "--eval-split", "20", "--eval-rows", "3")["rows"]["eval"] == 3
    )
    # a long run keeps the fractions; explicit steps are kept, and evaluation waits for the first checkpoint
    long = _plan(data, tokenizer_only, "--max-steps", "600", "--eval-split", "20")["steps"]
    assert (long["save_every"], long["eval_every"], long["log_every"]) == (60, 60, 10)
    cfg = cfgmod.merge(
        ("test", {"data": str(data), "model": str(tokenizer_only), "max_steps": 20, "eval_split": 20,
                  "eval_steps": 2, "save_steps": 5, "tracker": "none"}),
    )  # fmt: skip
    from rich.console import Console

    prep = train.prepare(cfg, Console(stderr=True, quiet=True))
    assert prep.plan["steps"]["first_eval"] == 6
    args = prep.args  # what the trainer gets
    assert (args.eval_steps, args.save_steps, args.eval_delay, args.logging_steps) == (2, 5, 5, 10)
    assert args.logging_first_step and args.eval_strategy == "steps"


def test_the_plan_says_1_row_and_2_rows(tmp_path, tokenizer_only):
    import io

    from rich.console import Console

    from glmtrain import train

    data = write_jsonl(tmp_path / "two.jsonl", TRAIN_ROWS[:2])
    plan = _plan(data, tokenizer_only, "--eval-split", "1", "--grad-accum", "1")
    buffer = io.StringIO()
    train.print_plan(plan, Console(file=buffer, width=300))
    text = buffer.getvalue()
    assert "1 row to train on, 1 held out" in text
    assert "1 step (1 per epoch, 1 epoch)" in text and "accumulation x 1 process " in text
    assert "0 rows truncated" in text and "evaluation  │ at the end (step 1) on 1 row " in text
    for wrong in ("1 rows", "1 steps", "1 processes", "1 epochs"):
        assert wrong not in text, wrong
    many = _plan(write_jsonl(tmp_path / "many.jsonl", TRAIN_ROWS), tokenizer_only, "--eval-split", "0")
    buffer = io.StringIO()
    train.print_plan(many, Console(file=buffer, width=300))
    assert "8 rows to train on, 0 held out" in buffer.getvalue() and "4 steps" in buffer.getvalue()
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [TRAIN_ROWS[0], TRAIN_ROWS[-1]])  # a chat row, a tool-call row
    out = glmtrain_cli("run", mixed, "--model", tokenizer_only, "--dry-run", "--max-length", "100", "--eval-split", "0")
    assert out.exit_code == 0, out.stderr
    message = " ".join(out.stderr.split())
    assert "cuts 1 of 2 training rows (50.0%)" in message
    assert "; 1 row keeps no trained token and is dropped" in message
