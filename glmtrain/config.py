"""The resolved training configuration: defaults < recipe or config file < command-line flags.

Defaults are those of the GLM-4 tool-call tutorial (LoRA r=8, alpha=32, dropout=0.1 on q/k/v,
learning rate 5e-4, batch 1, gradient accumulation 2, logging every 10 steps, evaluation on a held-out
split). Only pyyaml is imported here, lazily, so ``glmtrain --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "THUDM/glm-4-9b-chat-hf"
TRACKERS = ("auto", "cloud", "offline", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")


class GlmtrainError(Exception):
    """A user-facing error: one line saying what, an optional hint saying how to fix it, an exit code.

    Exit codes follow glmdata: 1 for data problems found, 2 for usage or I/O errors.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


class DataProblem(GlmtrainError):
    """The data (or its rendering) would train the wrong thing: exit code 1."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint, exit_code=1)


@dataclass
class TrainConfig:
    """Everything ``glmtrain run`` needs. Field names are the YAML keys of recipes and config files."""

    # data
    data: str | None = None
    eval_data: str | None = None
    eval_split: float = 0.1  # share held out (glmdata's stratified split); >= 1: about that many rows; 0: no evaluation
    skip_invalid: bool = False
    train_on: str = "assistant"  # passed to glmdata.masks.tokenize
    max_length: int | str | None = "auto"  # "auto": longest row, rounded up, capped at max_length_cap; None: no cap
    max_length_cap: int = 4096
    # model
    model: str = DEFAULT_MODEL
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it, float32 elsewhere
    load_in_4bit: bool = False
    template: str = "glmdata"  # the template rows are rendered with: glmdata (official), model (its tokenizer's), or a file
    allow_template_mismatch: bool = False
    template_samples: int = 64
    save_template: bool = True  # write the training template into the saved tokenizer when the model's differs
    # LoRA
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])
    # training
    output_dir: str = "output/glmtrain"
    num_epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 5e-4
    batch_size: int = 1
    eval_batch_size: int = 1
    gradient_accumulation_steps: int = 2
    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0  # < 1: a fraction of the total steps
    logging_steps: float = 10
    eval_steps: float = 0.1  # < 1: a fraction of the total steps
    save_steps: float = 0.1
    save_total_limit: int | None = None
    gradient_checkpointing: bool = True
    packing: bool = False
    seed: int = 42
    resume: str | None = None  # "latest" or a checkpoint directory
    deepspeed: str | None = None  # "zero2", "zero3" (shipped JSON files) or a path; for torchrun/deepspeed launchers
    # tracking
    tracker: str = "auto"  # auto: SwanLab cloud when logged in, offline otherwise
    project: str = "glmtrain"
    run_name: str | None = None
    # predictions at each evaluation
    num_predictions: int = 4
    max_new_tokens: int = 256
    # any other SFTConfig field, passed through as is
    sft: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
# a whole number of steps (rows), or below 1 a fraction of the total
STEPS_OR_RATIO = ("logging_steps", "eval_steps", "save_steps", "warmup_steps", "eval_split")
# keys a recipe may carry that are not training settings
META_KEYS = ("description", "source")


PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
ACCELERATE_DIR = PACKAGE_DIR / "accelerate"


def list_recipes() -> dict[str, str]:
    """Name -> one-line description of every recipe shipped in the package."""
    out = {}
    for entry in sorted(RECIPES_DIR.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = _parse_yaml(entry.read_text(encoding="utf-8"), entry.name)
            description = str(data.get("description") or "").strip()
            out[entry.name[: -len(".yaml")]] = description.splitlines()[0] if description else ""
    return out


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise GlmtrainError(f"{where}: not valid YAML ({e})", "fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GlmtrainError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load_recipe(name: str) -> dict[str, Any]:
    """The settings of a shipped recipe, by name (``glmtrain recipes`` lists them)."""
    entry = RECIPES_DIR / f"{name}.yaml"
    if not entry.is_file():
        known = ", ".join(list_recipes()) or "none"
        raise GlmtrainError(f"unknown recipe {name!r}", f"use one of: {known}")
    return _parse_yaml(entry.read_text(encoding="utf-8"), f"recipe {name}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML config file (same keys as a recipe)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise GlmtrainError(f"cannot read config file {p}: {e.strerror}", "check the path") from None
    return _parse_yaml(text, str(p))


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check and convert one setting to the type its field declares; YAML and flags give strings or numbers."""
    f = FIELDS[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if value is None:
        if default is None or name == "max_length":
            return None
        raise GlmtrainError(f"{where}: {name} needs a value")
    if name == "max_length":
        if isinstance(value, str):
            low = value.strip().lower()
            if low == "auto":
                return "auto"
            if low in ("none", "null", "0"):
                return None
            if low.isdigit():
                return int(low)
            if low.startswith("-") and low[1:].isdigit():
                raise GlmtrainError(f"{where}: max_length must be a positive number, 'auto' or 'none', got {value!r}")
            raise GlmtrainError(f"{where}: max_length must be a number, 'auto' or 'none', got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GlmtrainError(f"{where}: max_length must be a positive number, 'auto' or 'none', got {value!r}")
        return value
    if name == "sft":
        if not isinstance(value, dict):
            raise GlmtrainError(f"{where}: sft must be a mapping of SFTConfig fields")
        return dict(value)
    if name == "lora_target_modules":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise GlmtrainError(f"{where}: lora_target_modules must be a list of module names")
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise GlmtrainError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if name in STEPS_OR_RATIO:
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise GlmtrainError(f"{where}: {name} must be a number, got {value!r}") from None
        if not math.isfinite(out):
            raise GlmtrainError(f"{where}: {name} must be a finite number, got {value!r}")
        if out < 0:
            raise GlmtrainError(f"{where}: {name} must not be negative, got {value!r}")
        return int(out) if out >= 1 and out.is_integer() else out
    if isinstance(default, int) or name == "save_total_limit":
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise GlmtrainError(f"{where}: {name} must be a whole number, got {value!r}") from None
    if isinstance(default, float):
        try:
            out = float(value)
        except (TypeError, ValueError, OverflowError):
            raise GlmtrainError(f"{where}: {name} must be a number, got {value!r}") from None
        if not math.isfinite(out):  # nan compares false to every bound: it would train on garbage
            raise GlmtrainError(f"{where}: {name} must be a finite number, got {value!r}")
        return out
    return str(value)


def _check_choices(cfg: TrainConfig) -> None:
    from glmdata.render import TRAIN_ON

    for name, choices in (("tracker", TRACKERS), ("dtype", DTYPES), ("train_on", TRAIN_ON)):
        if getattr(cfg, name) not in choices:
            raise GlmtrainError(f"{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")
    for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "lora_r"):
        if getattr(cfg, name) < 1:
            raise GlmtrainError(f"{name} must be at least 1")
    if not 0 <= cfg.seed < 2**32:  # numpy and torch refuse other seeds, after the weights are loaded
        raise GlmtrainError(f"seed must be between 0 and {2**32 - 1}, got {cfg.seed}")
    if cfg.max_steps < -1 or cfg.max_steps == 0:
        raise GlmtrainError(f"max_steps must be a positive number of steps, or -1 to train for num_epochs; got {cfg.max_steps}")
    for name in ("learning_rate", "num_epochs"):
        if getattr(cfg, name) <= 0:
            raise GlmtrainError(f"{name} must be positive, got {getattr(cfg, name)}")
    if not 0 <= cfg.lora_dropout < 1:
        raise GlmtrainError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout}")


def merge(*layers: tuple[str, dict[str, Any]]) -> TrainConfig:
    """Build a config from layers applied in order, each ``(where, settings)``; later layers win.

    Unknown keys are an error naming the layer; ``sft`` mappings are merged key by key.
    """
    cfg = TrainConfig()
    for where, settings in layers:
        for key, value in settings.items():
            if key in META_KEYS:
                continue
            if key not in FIELDS:
                raise GlmtrainError(
                    f"{where}: unknown setting {key!r}",
                    "see `glmtrain run --help` for the settings; put other SFTConfig fields under `sft:`",
                )
            value = _coerce(key, value, where)
            if key == "sft":
                value = {**cfg.sft, **value}
            setattr(cfg, key, value)
    _check_choices(cfg)
    return cfg


def parse_assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--set``; VALUE is read as YAML (numbers, booleans, lists); ``sft.KEY`` targets SFTConfig."""
    import yaml

    if "=" not in text:
        raise GlmtrainError(f"--set {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if key.startswith("sft."):
        return "sft", {key[4:]: value}
    return key, value


def dump(cfg: TrainConfig) -> str:
    """The config as YAML, in field order, as written to ``glmtrain.yaml`` in the output directory."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
