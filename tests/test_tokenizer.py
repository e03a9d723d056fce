"""glmdata.tokenizer: local fast tokenizers, offline, with GLM-4's exact ids and clear errors."""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from unittest import mock

import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_tokenizer import (
    GLM4_PAT_STR,
    OFFICIAL_TEMPLATE,
    TIKTOKEN_MERGES,
    TIKTOKEN_SPECIALS,
    save_tiny_tokenizer,
    tiktoken_ranks,
    write_tiktoken_dir,
)

import glmdata.tokenizer as tokenizer_module
from glmdata.tokenizer import TokenizerError, cache_dir, load_tokenizer

GLM4_DIR = SHARED / "tokenizer" / "glm-4-9b-chat"
needs_glm4 = pytest.mark.skipif(not GLM4_DIR.is_dir(), reason="../shared/tokenizer/glm-4-9b-chat not present")

MERGES, SPECIALS = TIKTOKEN_MERGES, TIKTOKEN_SPECIALS


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Tests convert into a cache of their own (``GLMDATA_CACHE_DIR``), not the user's."""
    monkeypatch.setenv("GLMDATA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@lru_cache(maxsize=1)
def reference_encoding():
    import tiktoken

    first = 256 + len(MERGES)
    return tiktoken.Encoding(
        "tiny",
        pat_str=GLM4_PAT_STR,
        mergeable_ranks=tiktoken_ranks(),
        special_tokens={t: first + i for i, t in enumerate(SPECIALS)},
    )


# --- tiktoken layout (glm-4-9b-chat's original files) -------------------------------------------


def test_tiktoken_directory_converts_with_exact_ids(tmp_path):
    tokenizer = load_tokenizer(write_tiktoken_dir(tmp_path / "tok"))
    assert tokenizer.is_fast
    first = 256 + len(MERGES)
    assert tokenizer.convert_tokens_to_ids(SPECIALS) == list(range(first, first + len(SPECIALS)))
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template == OFFICIAL_TEMPLATE
    text = "[gMASK]<sop><|user|>\nhello world<|assistant|>"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference_encoding().encode(
        text, allowed_special="all"
    )


# Any text, with special tokens mixed in.
texts_with_specials = st.lists(
    st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(SPECIALS), max_size=5
).map("".join)


@given(texts_with_specials)
@settings(max_examples=200, deadline=None)
def test_tiktoken_conversion_encodes_like_tiktoken(text):
    tokenizer = _converted_tiny()
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference_encoding().encode(
        text, allowed_special="all"
    )


@lru_cache(maxsize=1)
def _converted_tiny():
    directory = Path(tempfile.mkdtemp())
    with mock.patch.dict(os.environ, {"GLMDATA_CACHE_DIR": str(directory / "cache")}):
        return load_tokenizer(write_tiktoken_dir(directory / "tok"))


def test_conversion_is_cached(tmp_path, monkeypatch):
    directory = write_tiktoken_dir(tmp_path / "tok")
    load_tokenizer(directory)
    assert list((cache_dir() / "tokenizers").glob("*/tokenizer.json"))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(tokenizer_module, "_convert_tiktoken", no_conversion)
    assert load_tokenizer(directory).convert_tokens_to_ids("<|assistant|>") == 256 + len(MERGES) + 5


def test_chat_template_jinja_wins_over_the_config(tmp_path):
    directory = write_tiktoken_dir(tmp_path / "tok")
    (directory / "chat_template.jinja").write_text("X", encoding="utf-8")
    assert load_tokenizer(directory).chat_template == "X"


def test_pat_str_defaults_to_glm4s(tmp_path):
    assert tokenizer_module.GLM4_PAT_STR == GLM4_PAT_STR
    tokenizer = load_tokenizer(write_tiktoken_dir(tmp_path / "tok", pat_str=False))
    assert tokenizer("hello world", add_special_tokens=False)["input_ids"] == reference_encoding().encode("hello world")


def test_a_file_in_the_directory_is_accepted(tmp_path):
    directory = write_tiktoken_dir(tmp_path / "tok")
    assert load_tokenizer(directory / "tokenizer_config.json").convert_tokens_to_ids("[gMASK]") == 256 + len(MERGES) + 1


# --- tokenizer.json layout ---------------------------------------------------------------------


def test_tokenizer_json_directory(tmp_path):
    directory = save_tiny_tokenizer(tmp_path / "tiny")
    tokenizer = load_tokenizer(directory)
    assert tokenizer.is_fast
    assert tokenizer.convert_tokens_to_ids(["[gMASK]", "<sop>", "<|user|>", "<|assistant|>"]) == [
        151331,
        151333,
        151336,
        151337,
    ]
    assert tokenizer.chat_template == OFFICIAL_TEMPLATE


def test_tokenizer_json_with_a_remote_code_class(tmp_path):
    directory = save_tiny_tokenizer(tmp_path / "tiny")
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "ChatGLM4Tokenizer"
    config["auto_map"] = {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]}
    config_path.write_text(json.dumps(config), encoding="utf-8")
    assert load_tokenizer(directory).convert_tokens_to_ids("<|assistant|>") == 151337


# --- errors ------------------------------------------------------------------------------------


def _binary_model(d: Path) -> Path:
    (d / "tokenizer.model").write_bytes(b"\x0a\x0b\x00sentencepiece")
    return d


def _tiktoken_without_config(d: Path) -> Path:
    write_tiktoken_dir(d)
    (d / "tokenizer_config.json").unlink()
    return d


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: d, r"no usable tokenizer .*looked for tokenizer\.json"),
        (_binary_model, "no usable tokenizer"),
        (_tiktoken_without_config, "no tokenizer_config.json"),
        (lambda d: write_tiktoken_dir(d, config={"eos_token": "x"}), "no added_tokens_decoder"),
        (
            lambda d: write_tiktoken_dir(d, config={"added_tokens_decoder": {"300": {"content": "<x>"}}}),
            "must be 264..264",
        ),
        (lambda d: _write(d / "tokenizer.json", "{broken"), "cannot load the tokenizer"),
        (lambda d: _write(write_tiktoken_dir(d) / "tokenizer_config.json", "[1]"), "not a JSON object"),
    ],
)
def test_errors_say_what_was_looked_for(tmp_path, setup, match):
    with pytest.raises(TokenizerError, match=match) as error:
        load_tokenizer(setup(tmp_path))
    assert error.value.__cause__ is None  # one clear message, no library traceback attached


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path.parent


def test_a_hub_name_is_not_fetched():
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer("THUDM/glm-4-9b-chat")


# --- the real glm-4-9b-chat files (skipped without ../shared) ------------------------------------


@lru_cache(maxsize=1)
def glm4():
    # The real conversion takes seconds: keep it in the user's cache between test runs.
    environ = {k: v for k, v in os.environ.items() if k != "GLMDATA_CACHE_DIR"}
    with mock.patch.dict(os.environ, environ, clear=True):
        return load_tokenizer(GLM4_DIR)


@lru_cache(maxsize=1)
def glm4_tiktoken():
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    config = json.loads((GLM4_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    specials = {t["content"]: int(i) for i, t in config["added_tokens_decoder"].items()}
    return tiktoken.Encoding(
        "glm4",
        pat_str=(GLM4_DIR / "pat_str.txt").read_text(encoding="utf-8"),
        mergeable_ranks=load_tiktoken_bpe(str(GLM4_DIR / "tokenizer.model")),
        special_tokens=specials,
    )


@needs_glm4
def test_glm4_special_ids():
    tokenizer = glm4()
    config = json.loads((GLM4_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    for token_id, token in config["added_tokens_decoder"].items():
        assert tokenizer.convert_tokens_to_ids(token["content"]) == int(token_id)
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") == 151337
    assert len(tokenizer) == 151343
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 151329
    assert tokenizer.chat_template == config["chat_template"]
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], add_generation_prompt=True, return_dict=False
    )
    assert ids[:3] == [151331, 151333, 151336] and ids[-1] == 151337


@needs_glm4
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data not present")
def test_glm4_encodes_like_tiktoken_on_rendered_rows():
    from glmdata.convert import convert_file
    from glmdata.render import render

    texts = [
        render(r.row["messages"])
        for r in convert_file(SHARED / "data" / "glaive_toolcall_zh_1k.json")
        if r.row is not None
    ]
    ours = glm4()(texts, add_special_tokens=False)["input_ids"]
    reference = glm4_tiktoken().encode_batch(texts, allowed_special="all")
    assert [i for i, (a, b) in enumerate(zip(ours, reference, strict=True)) if a != b] == []


@needs_glm4
@given(texts_with_specials)
@settings(max_examples=200, deadline=None)
def test_glm4_encodes_like_tiktoken_on_any_text(text):
    assert glm4()(text, add_special_tokens=False)["input_ids"] == glm4_tiktoken().encode(text, allowed_special="all")


def test_missing_tokenizer_extra_is_a_tokenizer_error_with_the_install_command(tmp_path, monkeypatch):
    import importlib.util

    from glmdata.tokenizer import TokenizerError, load_tokenizer

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tiktoken" else real(name, *a))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"tiktoken, not installed: pip install 'glmdata\[tokenizer\]'"):
        load_tokenizer(tmp_path)
