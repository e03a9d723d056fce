"""``--model tiny-random``: a tiny random GLM-4 for smoke runs and tests, built locally, no download.

It is a real ``GlmForCausalLM`` (2 layers, hidden size 64) with GLM-4's vocabulary size (151552),
and a byte-level tokenizer whose 14 special tokens have GLM-4's ids (``[gMASK]`` 151331, ``<sop>``
151333, ``<|system|>`` 151335, ``<|user|>`` 151336, ``<|assistant|>`` 151337, ``<|observation|>``
151338, ``<|endoftext|>`` 151329, ...); every other byte is one token whose id is the byte's value.
Its chat template is glmdata's (the official glm-4-9b-chat template). The weights are random but
seeded, so every build is the same model.

The preset is written once to a cache directory (``$GLMTRAIN_CACHE``, else ``~/.cache/glmtrain``)
and then used like any local model directory, so the whole loading path is the real one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from glmdata.checks import SPECIAL_TOKENS

PRESETS = ("tiny-random",)
# Bump when the preset changes, so an old cached copy is not reused.
_VERSION = "1"

GLM4_SPECIAL_TOKENS = SPECIAL_TOKENS
FIRST_SPECIAL_ID = 151329
VOCAB_SIZE = 151552


def is_preset(name: str) -> bool:
    """Whether ``name`` names a built-in preset rather than a hub id or directory."""
    return name in PRESETS and not Path(name).exists()


def cache_dir() -> Path:
    return Path(os.environ.get("GLMTRAIN_CACHE") or Path.home() / ".cache" / "glmtrain").expanduser()


def ensure_preset(name: str = "tiny-random") -> Path:
    """The directory holding preset ``name`` (model and tokenizer), building it on first use."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    target = cache_dir() / f"{name}-v{_VERSION}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so concurrent processes (accelerate ranks) never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_tokenizer().save_pretrained(str(tmp))
        build_model().save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tokenizer():
    """The byte-level tokenizer with GLM-4's special tokens at GLM-4's ids and glmdata's template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from glmdata.render import DEFAULT_TEMPLATE, load_template
    from glmdata.tokenizer import GLM4_PAT_STR

    byte_symbols = bytes_to_unicode()  # byte -> the printable symbol byte-level BPE spells it with
    vocab = {byte_symbols[b]: b for b in range(256)}
    # The special tokens go in the vocabulary at their GLM-4 ids (ids in between stay unused), so
    # that added as special tokens they keep those ids.
    vocab.update({tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(GLM4_SPECIAL_TOKENS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GLM4_PAT_STR), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GLM4_SPECIAL_TOKENS])
    for i, tok in enumerate(GLM4_SPECIAL_TOKENS):
        assert backend.token_to_id(tok) == FIRST_SPECIAL_ID + i, tok
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=load_template(DEFAULT_TEMPLATE).text,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens=list(GLM4_SPECIAL_TOKENS),
        clean_up_tokenization_spaces=False,
    )


def build_model(seed: int = 0):
    """A 2-layer random ``GlmForCausalLM`` laid out like glm-4-9b-chat-hf (q/k/v with bias, partial rotary)."""
    import torch
    from transformers import GlmConfig, GlmForCausalLM

    config = GlmConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        initializer_range=0.2,  # large enough logits that a LoRA adapter can visibly fit a few rows
        tie_word_embeddings=True,  # halves the size on disk; the vocabulary dominates it
        pad_token_id=FIRST_SPECIAL_ID,  # <|endoftext|>
        eos_token_id=[FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + 7, FIRST_SPECIAL_ID + 9],  # endoftext, user, observation
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GlmForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model
