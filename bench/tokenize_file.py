"""glmdata's tokenize step as a command, until glmdata has one of its own.

``python -m bench.tokenize_file MESSAGES.jsonl OUT.jsonl TOKENIZER_DIR`` reads the rows
`glmdata convert` wrote, tokenizes them with ``glmdata.masks.tokenize_batch`` (render with
trained spans, encode, labels) in batches of ``BATCH`` rows handed over as their JSON text, and
writes one ``{"input_ids", "labels"}`` line per row: the same output as ``bench.tutorial``'s
command, from the same kind of input (the raw Glaive file, through `glmdata convert`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import islice
from typing import BinaryIO

BATCH = 1000


def line_batches(f: BinaryIO, size: int = BATCH) -> Iterator[list[bytes]]:
    """The non-empty lines of ``f`` in lists of ``size``."""
    lines = (line for line in f if line.strip())
    while batch := list(islice(lines, size)):
        yield batch


def main(argv: list[str]) -> int:
    import orjson

    from glmdata.masks import tokenize_batch
    from glmdata.tokenizer import load_tokenizer

    source, target, tokenizer_dir = argv
    tokenizer = load_tokenizer(tokenizer_dir)
    with open(source, "rb") as f, open(target, "wb") as out:
        for batch in line_batches(f):
            tokens = tokenize_batch({"messages": batch}, tokenizer)
            for ids, labels in zip(tokens["input_ids"], tokens["labels"], strict=True):
                out.write(orjson.dumps({"input_ids": ids, "labels": labels}) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
