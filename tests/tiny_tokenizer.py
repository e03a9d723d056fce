"""Test support for rendering and masks that runs from the repository alone (no ../shared, no
network): a tiny tokenizer with GLM-4's special ids, the official template, and hypothesis
strategies for GLM-4 conversations.

The tokenizer (the ``tokenizer.json`` kind) is byte level: every byte is one token whose id is
the byte's value (``"a"`` -> 97, ``"\\n"`` -> 10), so expected ids can be written by hand. The 14
special tokens have GLM-4's ids (``[gMASK]`` 151331, ``<sop>`` 151333, ``<|user|>`` 151336,
``<|assistant|>`` 151337, ...), so code that hard-codes them, like the official finetune demo, runs
unchanged. The pre-tokenizer is GLM-4's (its split regex, then byte level), as in the converted
real tokenizer.

``write_tiktoken_dir`` writes a small vocabulary in glm-4-9b-chat's original layout (tiktoken
``tokenizer.model`` + ``tokenizer_config.json``): ``glmdata.tokenizer.load_tokenizer`` converts it
and encodes it with tiktoken, as it does the real files.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from hypothesis import strategies as st

from glmdata.checks import SPECIAL_TOKENS

GLM4_SPECIAL_TOKENS = SPECIAL_TOKENS
FIRST_SPECIAL_ID = 151329
GLM4_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FIXTURES = Path(__file__).parent / "fixtures" / "render"
#: The official glm-4-9b-chat template (v1), copied byte for byte; see fixtures/render/SOURCES.md.
OFFICIAL_TEMPLATE = (FIXTURES / "glm-4-9b-chat.v1.jinja").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _backend_json() -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = bytes_to_unicode()  # byte value -> printable symbol, as byte-level BPE spells bytes
    vocab = {byte_symbols[b]: b for b in range(256)}
    # The special tokens go in the vocabulary at their GLM-4 ids (the ids in between stay unused),
    # so that, added as special tokens, they keep those ids.
    vocab.update({token: FIRST_SPECIAL_ID + i for i, token in enumerate(GLM4_SPECIAL_TOKENS)})
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
    assert [backend.token_to_id(t) for t in GLM4_SPECIAL_TOKENS] == list(range(FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + 14))
    return backend.to_str()


def build_tiny_tokenizer(chat_template: str | None = OFFICIAL_TEMPLATE):
    """A fresh ``PreTrainedTokenizerFast`` (byte-level, GLM-4 special ids) with ``chat_template``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend_json()),
        chat_template=chat_template,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(GLM4_SPECIAL_TOKENS),
        clean_up_tokenization_spaces=False,
    )


def save_tiny_tokenizer(directory: Path, chat_template: str | None = OFFICIAL_TEMPLATE) -> Path:
    """Save the tiny tokenizer as a transformers tokenizer directory (tokenizer.json layout)."""
    build_tiny_tokenizer(chat_template).save_pretrained(str(directory))
    return directory


# --- a tiny vocabulary in glm-4-9b-chat's tiktoken layout ----------------------------------------

#: Merges after the 256 byte tokens; the special tokens follow the last rank.
TIKTOKEN_MERGES = [b"he", b"ll", b"llo", b"hello", b" w", b"or", b" wor", b"\n\n"]
TIKTOKEN_SPECIALS = ["<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


def tiktoken_ranks() -> dict[bytes, int]:
    """The tiny tiktoken vocabulary: token bytes -> rank."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({token: 256 + i for i, token in enumerate(TIKTOKEN_MERGES)})
    return ranks


def write_tiktoken_dir(directory: Path, *, config: dict | None = None, pat_str: bool = True) -> Path:
    """Write the tiny vocabulary as glm-4-9b-chat's files are laid out (``tokenizer.model``,
    ``tokenizer_config.json`` with the special tokens, ``pat_str.txt``); ``config`` replaces the
    config's content."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in tiktoken_ranks().items()]
    (directory / "tokenizer.model").write_text("\n".join(lines) + "\n", encoding="ascii")
    if pat_str:
        (directory / "pat_str.txt").write_text(GLM4_PAT_STR, encoding="utf-8")
    if config is None:
        first = 256 + len(TIKTOKEN_MERGES)
        flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        config = {
            "added_tokens_decoder": {str(first + i): {"content": t, **flags} for i, t in enumerate(TIKTOKEN_SPECIALS)},
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "padding_side": "left",
            "chat_template": OFFICIAL_TEMPLATE,
            "tokenizer_class": "ChatGLM4Tokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
        }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return directory


# --- hypothesis strategies for GLM-4 conversations ------------------------------------------------

#: Any text (no surrogates): CJK, emoji, control characters, newlines, markup characters.
any_text = st.text(st.characters(codec="utf-8"), max_size=30)
#: Occasionally long text, as in real rows (a long padded table, long answers).
some_text = st.one_of(any_text, any_text, any_text, st.text(st.characters(codec="utf-8"), min_size=300, max_size=2000))
names = st.text(st.characters(codec="utf-8", exclude_categories=("C", "Z")), min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def function_tools(draw):
    properties = draw(
        st.dictionaries(
            names,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["string", "number", "integer", "boolean", "array", "object"])},
                optional={"description": any_text, "enum": st.lists(json_values, max_size=3)},
            ),
            max_size=3,
        )
    )
    function = {"name": draw(names), "description": draw(any_text)}
    parameters = {"type": "object", "properties": properties}
    if properties and draw(st.booleans()):
        parameters["required"] = draw(st.lists(st.sampled_from(sorted(properties)), unique=True))
    if draw(st.booleans()):
        function["parameters"] = parameters
    if draw(st.booleans()):
        function["x-extra"] = draw(json_values)  # unknown keys are kept, in order
    return {"type": "function", "function": function}


tools_lists = st.lists(
    st.one_of(
        function_tools(),
        function_tools(),
        st.fixed_dictionaries({"type": st.sampled_from(["python", "simple_browser", "cogview", "web_search"])}),
    ),
    max_size=4,
)


@st.composite
def conversations(draw, *, loss_flags: bool = True, end_with_assistant: bool = False):
    """A GLM-4 conversation: optional system message (tools, possibly with empty content), user
    turns, assistant answers, native tool calls (metadata = name, content = arguments JSON) and
    JSON-style calls (content ``{"name", "arguments"}``) followed by observations, multi-turn."""
    messages = []
    tools = draw(st.one_of(st.none(), tools_lists))
    if tools is not None or draw(st.booleans()):
        system = {"role": "system", "content": draw(st.one_of(st.just(""), some_text))}
        if tools is not None:
            system["tools"] = tools
        messages.append(system)
    tool_names = [t["function"]["name"] for t in tools or [] if t["type"] == "function"] or ["get_weather"]
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(some_text)})
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(tool_names))
            arguments = draw(st.dictionaries(names, json_values, max_size=3))
            if draw(st.booleans()):
                call = {"role": "assistant", "metadata": name, "content": json.dumps(arguments, ensure_ascii=False)}
            else:
                call = {
                    "role": "assistant",
                    "content": json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False),
                }
            messages.append(call)
            messages.append({"role": "observation", "content": draw(some_text)})
        messages.append({"role": "assistant", "content": draw(some_text)})
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(any_text)})
    if end_with_assistant:
        messages.append({"role": "assistant", "content": draw(st.text(min_size=1, max_size=20))})
    if loss_flags:
        for message in messages:
            flag = draw(st.sampled_from([None, None, None, True, False]))
            if flag is not None:
                message["loss"] = flag
    return messages
