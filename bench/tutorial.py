"""The tool-call tutorial's pipeline, as written (the baseline contender).

Reproduced from /work/shared/FIELD_NOTES.md section 4 (the chatglm-finetune TRL tutorial that
ships glaive_toolcall_zh_1k.json): parse the JSON, map each Glaive row with its
``formatting_func``, render with transformers' ``apply_chat_template(tokenize=False)`` and the
official glm-4-9b-chat template. Its defects are kept on purpose, they are what it does:

- ``human`` becomes role ``users`` (rendered as the plain text ``<|users|>``);
- the system message always carries ``tools`` (``[]`` when there are none: an empty tools header);
- the tools JSON is parsed with a bare ``except:`` that turns malformed tools into no tools;
- a ``function_call`` becomes an assistant message whose content is the ``{"name", "arguments"}``
  JSON as Glaive wrote it;
- nothing is validated.

Tools are wrapped as ``{"type": "function", "function": tool}``: with that wrapping the pipeline
reproduces the token counts FIELD_NOTES gives for it (346 of 1000 rows over 512 tokens, median
401, p90 979, max 2573); without it the template would print no tool at all.

The tokenizer is built offline (no hub): a byte-level fast tokenizer with GLM-4's special tokens,
as tests/tiny_tokenizer.py builds it, carrying the official template. Rendering with
``tokenize=False`` does not depend on the vocabulary.

Run as a command (the whole-command contender): ``python -m bench.tutorial IN.json OUT.jsonl``
writes one ``{"text": ...}`` line per row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_TEMPLATE = REPO / "glmdata" / "templates" / "glm-4-9b-chat.jinja"

GLM4_SPECIAL_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
)

ROLES = {"human": "users", "gpt": "assistant", "function_call": "assistant", "observation": "observation"}


def formatting_func(example: dict) -> list[dict[str, Any]]:
    """The tutorial's row mapping (see the module docstring for what it gets wrong)."""
    try:
        tools = [{"type": "function", "function": tool} for tool in json.loads(example["tools"])]
    except:  # noqa: E722 - the tutorial's bare except, reproduced
        tools = []
    messages: list[dict[str, Any]] = [{"role": "system", "content": "", "tools": tools}]
    for turn in example["conversations"]:
        messages.append({"role": ROLES[turn["from"]], "content": turn["value"]})
    return messages


def official_template() -> str:
    with open(OFFICIAL_TEMPLATE, encoding="utf-8", newline="") as f:
        return f.read()


def build_tokenizer(chat_template: str | None = None) -> Any:
    """A transformers fast tokenizer built offline (byte level, GLM-4 special tokens) with the
    official glm-4-9b-chat chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = bytes_to_unicode()
    vocab = {symbols[b]: b for b in range(256)}
    vocab.update({token: 151329 + i for i, token in enumerate(GLM4_SPECIAL_TOKENS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GLM4_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=chat_template if chat_template is not None else official_template(),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )


def run(path: str) -> list[str]:
    """The whole pipeline on a JSON array file: the training texts, one per row."""
    tokenizer = build_tokenizer()
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [tokenizer.apply_chat_template(formatting_func(row), tokenize=False) for row in rows]


def main(argv: list[str]) -> int:
    source, target = argv
    import orjson  # the harness's output, not the tutorial's: as fast as glmdata's own writing

    texts = run(source)
    with open(target, "wb") as out:
        for text in texts:
            out.write(orjson.dumps({"text": text}) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
