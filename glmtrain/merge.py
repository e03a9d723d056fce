"""Load a ``glmtrain run`` output directory (base model + LoRA adapter), and ``glmtrain merge`` it.

The base model is the ``model`` recorded in the run's ``glmtrain.yaml`` (a preset such as
``tiny-random`` is rebuilt identically), else the adapter's ``base_model_name_or_path``;
``--base-model`` overrides both when the base has moved.
"""

from __future__ import annotations

import json
from pathlib import Path

from glmtrain.config import DTYPES, GlmtrainError


def base_model_of(output_dir: Path) -> str:
    """The base model a run was trained from."""
    import yaml

    config_file = output_dir / "glmtrain.yaml"
    if config_file.is_file():
        model = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("model")
        if model:
            return str(model)
    adapter = json.loads((output_dir / "adapter_config.json").read_text(encoding="utf-8"))
    base = adapter.get("base_model_name_or_path")
    if not base:
        raise GlmtrainError(f"{output_dir}: the adapter does not record its base model", "pass --base-model")
    return str(base)


def load_trained(output_dir: str | Path, *, base_model: str | None = None, dtype: str = "auto"):
    """``(model, tokenizer)``: the base model with the run's adapter, and the run's saved tokenizer."""
    from glmtrain.train import load_tokenizer, offline_hint, resolve_dtype, resolve_model

    out = Path(output_dir)
    if dtype not in DTYPES:
        raise GlmtrainError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not (out / "adapter_config.json").is_file():
        raise GlmtrainError(
            f"{out}: no adapter_config.json here", "pass the output directory of `glmtrain run` (its --output-dir)"
        )
    base = base_model or base_model_of(out)
    tokenizer = load_tokenizer(str(out))

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model(base), dtype=getattr(torch, resolve_dtype(dtype)), device_map=device
        )
    except OSError as e:
        raise GlmtrainError(
            f"cannot load the base model {base!r}: {e}".splitlines()[0],
            offline_hint(base) + "; or pass --base-model DIR",
        ) from None
    tuned = PeftModel.from_pretrained(model, str(out))
    tuned.eval()
    return tuned, tokenizer


def merge(
    output_dir: str | Path, target: str | Path | None = None, *, base_model: str | None = None, dtype: str = "auto"
) -> Path:
    """Merge the adapter into the base weights and save a standalone model (with the run's tokenizer)."""
    model, tokenizer = load_trained(output_dir, base_model=base_model, dtype=dtype)
    target = Path(target) if target else Path(output_dir) / "merged"
    merged = model.merge_and_unload()
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target
