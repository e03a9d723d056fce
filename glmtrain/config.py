"""The resolved training configuration: defaults < recipe or config file < command-line flags.

Defaults are those of the GLM-4 tool-call tutorial (LoRA r=8, alpha=32, dropout=0.1 on q/k/v,
learning rate 5e-4, batch 1, gradient accumulation 2, logging every 10 steps, evaluation on a held-out
split). ``TrainConfig`` is a Pydantic model: its field types turn the strings and numbers of YAML
files and flags into settings and check their ranges; ``merge`` turns its errors into one-line
``GlmtrainError`` messages that name the layer and the key. The CLI imports this module only in the
commands that need it, so ``glmtrain --help`` stays instant.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    WrapValidator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from glmdata.render import TrainOn

DEFAULT_MODEL = "THUDM/glm-4-9b-chat-hf"
Tracker = Literal["auto", "cloud", "offline", "none"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
TRACKERS: tuple[str, ...] = get_args(Tracker)
DTYPES: tuple[str, ...] = get_args(Dtype)
# keys a recipe may carry that are not training settings
META_KEYS = ("description", "source")

PACKAGE_DIR = Path(__file__).resolve().parent
RECIPES_DIR = PACKAGE_DIR / "recipes"
ACCELERATE_DIR = PACKAGE_DIR / "accelerate"


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


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count and its noun, singular or plural."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


# --- field types: what Pydantic's lax mode does not already do -------------------------------


def _path_text(value: Any) -> Any:
    """Paths from Python callers are kept as text, so the config dumps to YAML as it was given."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _whole_if_integral(value: float) -> float:
    """10.0 steps is 10 steps: SFTConfig reads a whole number >= 1 as a count, below 1 as a ratio."""
    return int(value) if value >= 1 and value.is_integer() else value


def _max_length(value: Any, handler: Any) -> Any:
    """``auto``, ``none`` (or 0 from the flag, which is text) or a positive number, as one error when wrong."""
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("none", "null", "0"):
            return None
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("max_length", "must be a positive number, 'auto' or 'none'") from None


def _module_names(value: Any) -> Any:
    """``q_proj,k_proj,v_proj`` from a flag is the list a YAML file writes."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _max_steps(value: int) -> int:
    if value == 0 or value < -1:
        raise PydanticCustomError("max_steps", "must be a positive number of steps, or -1 to train for num_epochs")
    return value


def _auto_or_count(value: Any, handler: Any) -> Any:
    """``auto`` or a count of rows (0: all), as one error when wrong."""
    if isinstance(value, str):
        value = value.strip().lower()
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("eval_rows", "must be 'auto' or a number of rows (0: all of them)") from None


def _data_files(value: Any) -> Any:
    """One path stays text (as a config file writes it); several are a list; an empty list is none."""
    if isinstance(value, (list, tuple)):
        paths = [_path_text(v) for v in value]
        return None if not paths else paths[0] if len(paths) == 1 else paths
    return _path_text(value)


def _weights(value: Any) -> Any:
    """``2,1`` from the flag is the list a YAML file writes; one number is a list of one."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value] if isinstance(value, (int, float)) else value


PathText = Annotated[str, BeforeValidator(_path_text)]
DataFiles = Annotated[str | list[str] | None, BeforeValidator(_data_files)]
# a weight is how many times each training row of its dataset is drawn per epoch (see glmtrain.train.draw)
Weights = Annotated[Annotated[list[PositiveFloat], Field(min_length=1)] | None, BeforeValidator(_weights)]
EvalRows = Annotated[Literal["auto"] | NonNegativeInt, WrapValidator(_auto_or_count)]
# a whole number of steps (rows, for eval_split), or below 1 a fraction of the total
StepsOrRatio = Annotated[float, Field(ge=0), AfterValidator(_whole_if_integral)]
MaxLength = Annotated[Literal["auto"] | PositiveInt | None, WrapValidator(_max_length)]


class TrainConfig(BaseModel):
    """Everything ``glmtrain run`` needs. Field names are the YAML keys of recipes and config files.

    Values are checked when the model is built and when a field is assigned; ``merge`` builds it from
    layers of settings and reports a wrong value as a ``GlmtrainError``.
    """

    # allow_inf_nan: nan compares false to every bound, so it would pass them and train on garbage.
    # coerce_numbers_to_str: YAML reads `run_name: 2024` as a number.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True, validate_assignment=True)

    # data: one file, or several mixed by weights (their order is the order of weights)
    data: DataFiles = None
    weights: Weights = None
    eval_data: PathText | None = None
    eval_split: StepsOrRatio = 0.1  # share held out (glmdata's stratified split); >= 1: about that many rows; 0: none
    # held-out rows an evaluation reads (a seeded sample); auto: at most 200, and no more than the rows
    # trained between two evaluations; 0: all of them
    eval_rows: EvalRows = "auto"
    skip_invalid: bool = False
    train_on: TrainOn = "assistant"  # passed to glmdata.masks.tokenize
    max_length: MaxLength = "auto"  # "auto": longest row, rounded up, capped at max_length_cap; None: no cap
    max_length_cap: PositiveInt = 4096
    # model
    model: PathText = DEFAULT_MODEL
    tokenizer: PathText | None = None  # a tokenizer directory, instead of the model's (a dry run needs no model)
    dtype: Dtype = "auto"  # auto: bfloat16 on a GPU that supports it, float32 elsewhere
    load_in_4bit: bool = False
    template: PathText = "glmdata"  # the template rows are rendered with: glmdata (official), model, or a file
    allow_template_mismatch: bool = False
    template_samples: PositiveInt = 64
    save_template: bool = True  # write the training template into the saved tokenizer when the model's differs
    # LoRA
    lora_r: PositiveInt = 8
    lora_alpha: PositiveInt = 32
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    lora_target_modules: Annotated[list[str], BeforeValidator(_module_names), Field(min_length=1)] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj"]
    )
    # training
    output_dir: PathText = "output/glmtrain"
    num_epochs: PositiveFloat = 1.0
    max_steps: Annotated[int, AfterValidator(_max_steps)] = -1
    learning_rate: PositiveFloat = 5e-4
    batch_size: PositiveInt = 1
    eval_batch_size: PositiveInt = 1
    gradient_accumulation_steps: PositiveInt = 2
    lr_scheduler_type: str = "linear"
    warmup_steps: StepsOrRatio = 0  # < 1: a fraction of the total steps
    logging_steps: StepsOrRatio = 10
    eval_steps: StepsOrRatio = 0.1  # < 1: a fraction of the total steps
    save_steps: StepsOrRatio = 0.1
    save_total_limit: int | None = None
    gradient_checkpointing: bool = True
    packing: bool = False
    # rows of a batch laid end to end with position_ids, no padding; None: when the model's masks allow it
    # (glmtrain.train.choose_batching)
    padding_free: bool | None = None
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 42  # numpy and torch refuse other seeds, after the weights load
    resume: PathText | None = None  # "latest" or a checkpoint directory
    deepspeed: PathText | None = None  # "zero2", "zero3" (shipped JSON files) or a path; for torchrun/deepspeed
    # tracking
    tracker: Tracker = "auto"  # auto: SwanLab cloud when logged in, offline otherwise
    project: str = "glmtrain"
    run_name: str | None = None
    # predictions at each evaluation
    num_predictions: NonNegativeInt = 4
    max_new_tokens: PositiveInt = 256
    # any other SFTConfig field, passed through as is
    sft: dict[str, Any] = Field(default_factory=dict)
    # where each sft key was set (the layer), for error messages; not a setting
    _sft_sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def data_files(self) -> list[str]:
        """The training data files, in order (``data`` is one path or a list)."""
        if self.data is None:
            return []
        return [self.data] if isinstance(self.data, str) else list(self.data)

    def data_weights(self) -> list[float]:
        """One weight per data file (1 each when ``weights`` is not set); a count that does not match is a
        usage error."""
        files = self.data_files()
        if self.weights is None:
            return [1.0] * len(files)
        if len(self.weights) != len(files):
            raise GlmtrainError(
                f"weights: {plural(len(self.weights), 'weight')} ({', '.join(f'{w:g}' for w in self.weights)}) "
                f"for {plural(len(files), 'data file')}",
                "give one weight per DATA file, in the same order (--weights 2,1 for two files), or none",
            )
        return list(self.weights)

    def sft_source(self, key: str) -> str:
        """The layer that set ``sft.KEY`` (a recipe, a file, the flags or a ``--set`` item)."""
        return self._sft_sources.get(key, "settings")

    def __eq__(self, other: object) -> bool:
        # the same settings are equal wherever they came from
        return isinstance(other, TrainConfig) and self.__dict__ == other.__dict__


# --- recipes and config files ----------------------------------------------------------------


def list_recipes() -> dict[str, str]:
    """Name -> one-line description of every recipe shipped in the package."""
    out = {}
    for entry in sorted(RECIPES_DIR.glob("*.yaml")):
        description = str(_parse_yaml(entry.read_text(encoding="utf-8"), entry.name).get("description") or "").strip()
        out[entry.stem] = description.splitlines()[0] if description else ""
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


# --- layers ----------------------------------------------------------------------------------


def _usage_error(where: str, error: ErrorDetails) -> GlmtrainError:
    """Pydantic's first error as one line: the layer, the key, what is allowed and what was given."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, TrainConfig.model_fields, n=1)
        return GlmtrainError(
            f"{where}: unknown setting {key!r}",
            (f"did you mean {close[0]!r}? " if close else "")
            + "see `glmtrain run --help` for the settings; put other SFTConfig fields under `sft:`",
        )
    hint = "see `glmtrain run --help` for the settings and their values"
    if error["input"] is None:
        return GlmtrainError(f"{where}: {key} needs a value", hint)
    what = re.sub(r"^\w+ should ", "must ", error["msg"])  # "Input should be greater than 0"
    return GlmtrainError(f"{where}: {key} {what}, got {error['input']!r}", hint)


def merge(*layers: tuple[str, dict[str, Any]]) -> TrainConfig:
    """Build a config from layers applied in order, each ``(where, settings)``; later layers win.

    Each layer is validated on its own, so an error names the layer it comes from; unknown keys are
    errors; ``sft`` mappings are merged key by key.
    """
    cfg = TrainConfig()
    sources: dict[str, str] = {}
    for where, settings in layers:
        try:
            layer = TrainConfig.model_validate({k: v for k, v in settings.items() if k not in META_KEYS})
        except ValidationError as e:
            raise _usage_error(where, e.errors()[0]) from None
        given = {name: getattr(layer, name) for name in layer.model_fields_set}
        if "sft" in given:
            sources.update(dict.fromkeys(given["sft"], where))
            given["sft"] = {**cfg.sft, **given["sft"]}
        cfg = cfg.model_copy(update=given)  # the values were validated just above
    cfg._sft_sources = sources
    return cfg


def parse_assignment(text: str) -> dict[str, Any]:
    """The setting ``--set KEY=VALUE`` gives, as a layer for ``merge``.

    VALUE is read as YAML (numbers, booleans, lists); ``sft.KEY`` sets a field of SFTConfig.
    """
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
        return {"sft": {key[4:]: value}}
    return {key: value}


def dump(cfg: TrainConfig) -> str:
    """The config as YAML, in field order, as written to ``glmtrain.yaml`` in the output directory."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(), sort_keys=False, allow_unicode=True)
