"""The tool-call tutorial's pipeline, as written (the baseline contender).

Reproduced from /work/shared/FIELD_NOTES.md section 4 (the chatglm-finetune TRL tutorial that
ships glaive_toolcall_zh_1k.json): parse the JSON, map each Glaive row with its
``formatting_func``, render with transformers' ``apply_chat_template(tokenize=False)`` and the
official glm-4-9b-chat template, then tokenize the text as TRL's ``SFTTrainer`` does: one
``tokenizer(text=...)`` call per row, labels equal to the ids (loss on every token). Its defects
are kept on purpose, they are what it does:

- ``human`` becomes role ``users`` (rendered as the plain text ``<|users|>``);
- the system message always carries ``tools`` (``[]`` when there are none: an empty tools header);
- the tools JSON is parsed with a bare ``except:`` that turns malformed tools into no tools;
- a ``function_call`` becomes an assistant message whose content is the ``{"name", "arguments"}``
  JSON as Glaive wrote it;
- nothing is validated.

Tools are wrapped as ``{"type": "function", "function": tool}``: with that wrapping the pipeline
reproduces the token counts FIELD_NOTES gives for it (346 of 1000 rows over 512 tokens, median
401, p90 979, max 2573); without it the template would print no tool at all.

For rendering alone (``build_tokenizer``), the tokenizer is built offline (no hub): a byte-level
fast tokenizer with GLM-4's special tokens, as tests/tiny_tokenizer.py builds it, carrying the
official template; ``tokenize=False`` does not depend on the vocabulary.

Run as a command (the whole-process contender): ``python -m bench.tutorial IN.json OUT.jsonl
TOKENIZER_DIR [--batch N]`` writes one ``{"input_ids", "labels"}`` line per row (see
``load_tokenizer`` for how the tokenizer is loaded). ``--batch N`` calls the tokenizer on N texts
at a time instead (its threads at work): faster than the tutorial as written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_TEMPLATE = REPO / "glmdata" / "templates" / "glm-4-9b-chat.jinja"

GLM4_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
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


def token_ids(texts: list[str], tokenizer: Any, batch: int = 1) -> list[list[int]]:
    """The ids of each text: one call per text as TRL's SFTTrainer makes it (``batch=1``), else
    ``batch`` texts per call."""
    if batch <= 1:
        return [tokenizer(text=text)["input_ids"] for text in texts]
    return [
        ids for start in range(0, len(texts), batch) for ids in tokenizer(texts[start : start + batch])["input_ids"]
    ]


def load_tokenizer(directory: str) -> Any:
    """The tokenizer as the tutorial loads it: ``AutoTokenizer`` for a ``tokenizer.json``. For
    glm-4-9b-chat's tiktoken files, which transformers loads only by running the model's own code
    (``trust_remote_code``), glmdata's loader: transformers' ``TikTokenConverter``, the same ids."""
    if (Path(directory) / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    import glmdata.tokenizer

    return glmdata.tokenizer.load_tokenizer(directory)


def main(argv: list[str]) -> int:
    import argparse

    import orjson  # the harness's output, not the tutorial's: as fast as glmdata's own writing

    parser = argparse.ArgumentParser(prog="python -m bench.tutorial")
    parser.add_argument("source", help="Glaive JSON array")
    parser.add_argument("target", help="JSONL of input_ids and labels")
    parser.add_argument("tokenizer", help="tokenizer directory")
    parser.add_argument("--batch", type=int, default=1, help="texts per tokenizer call (default 1, as TRL)")
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.tokenizer)
    template = official_template()
    with open(args.source, encoding="utf-8") as f:
        rows = json.load(f)
    texts = [
        tokenizer.apply_chat_template(formatting_func(row), tokenize=False, chat_template=template) for row in rows
    ]
    with open(args.target, "wb") as out:
        for ids in token_ids(texts, tokenizer, args.batch):
            out.write(orjson.dumps({"input_ids": ids, "labels": ids}) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
