"""In-process contenders. Each runs in a fresh child process (``python -m bench.tasks NAME ...``):
set-up (imports, tokenizer, reading already converted rows) is untimed, the work is timed with
``perf_counter`` inside the process, and one JSON line goes to stdout: ``seconds``, ``rows`` and a
``digest`` of the output, so that the parent can check two contenders produced the same thing.

A fresh process per pass means every pass starts cold, as a real run does: no cache (tool
blocks, schema checks, compiled templates) survives from an earlier pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

TOKENIZE_BATCH = 1000


def _digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _read_messages(path: str) -> list[list[dict]]:
    import orjson

    with open(path, "rb") as f:
        return [orjson.loads(line)["messages"] for line in f if line.strip()]


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- floor vs convert ------------------------------------------------------------------------


def floor(jsonl_path: str, out_path: str) -> dict[str, Any]:
    """The physical floor: orjson parse and serialize of each JSONL line, written out."""
    import orjson

    loads, dumps = orjson.loads, orjson.dumps
    start = time.perf_counter()
    rows = 0
    with open(jsonl_path, "rb") as f, open(out_path, "wb") as out:
        for line in f:
            out.write(dumps(loads(line)) + b"\n")
            rows += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "outputs": rows, "digest": _file_digest(out_path)}


def convert(jsonl_path: str, out_path: str, workers: int | None = None) -> dict[str, Any]:
    """glmdata.convert_file on the JSONL, kept rows (their bytes, ``result.encoded``) and rejects
    written as `glmdata convert` writes them; with workers, ``decode=False``: no dicts are needed."""
    from glmdata.convert import Options, convert_file
    from glmdata.jsontext import compact

    kwargs = {} if workers is None else {"workers": workers, "decode": False}
    start = time.perf_counter()
    rows = kept = 0
    with open(out_path, "wb") as out, open(out_path + ".rejects", "wb") as bad:
        for result in convert_file(jsonl_path, Options(), **kwargs):
            rows += 1
            if result.ok:
                out.write(result.encoded + b"\n")
                kept += 1
            elif result.rejected:
                bad.write(compact(result.reject_record(jsonl_path)) + b"\n")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "outputs": kept, "digest": _file_digest(out_path)}


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- render ----------------------------------------------------------------------------------


def render_ours(messages_path: str) -> dict[str, Any]:
    from glmdata.render import render

    rows = _read_messages(messages_path)
    start = time.perf_counter()
    texts = [render(m) for m in rows]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(rows), "outputs": len(texts), "digest": _digest(texts)}


def render_theirs(messages_path: str) -> dict[str, Any]:
    from bench.tutorial import build_tokenizer

    tokenizer = build_tokenizer()
    rows = _read_messages(messages_path)
    start = time.perf_counter()
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in rows]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(rows), "outputs": len(texts), "digest": _digest(texts)}


# --- tokenize + masks ----------------------------------------------------------------------


def spans(messages_path: str, out_path: str) -> dict[str, Any]:
    """Set-up, not a contender: ``render_spans`` of every converted row, written as ``[text, spans]``
    lines, so that the encoding contenders all start from the same rendered text."""
    import orjson

    from glmdata.render import render_spans

    rows = _read_messages(messages_path)
    start = time.perf_counter()
    rendered = [render_spans(m) for m in rows]
    seconds = time.perf_counter() - start
    with open(out_path, "wb") as out:
        for r in rendered:
            out.write(orjson.dumps([r.text, r.spans]) + b"\n")
    return {"seconds": seconds, "rows": len(rows), "outputs": len(rendered), "digest": _file_digest(out_path)}


def _read_rendered(path: str) -> list[Any]:
    import orjson

    from glmdata.render import Rendered

    with open(path, "rb") as f:
        return [Rendered(text, [tuple(span) for span in spans]) for text, spans in map(orjson.loads, f)]


def _ids_digest(ids: Iterable[list[int]]) -> str:
    import orjson

    h = hashlib.sha256()
    for row in ids:
        h.update(orjson.dumps(row) + b"\n")
    return h.hexdigest()


def _warm_up() -> Any:
    """A short conversation for each encoder's first call, outside the workload: glmdata keeps
    long pieces it has encoded, which must not give it a head start on the timed rows."""
    from glmdata.render import render_spans

    return render_spans([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}])


def encode_bare(rendered_path: str, tokenizer_dir: str) -> dict[str, Any]:
    """The floor of tokenize + masks: the tokenizer's own batch encode of the same rendered text,
    batches of ``TOKENIZE_BATCH``: tiktoken's ``encode_batch(allowed_special="all")`` (its thread
    pool) for a tokenizer converted from tiktoken files, else ``tokenizer(texts,
    add_special_tokens=False)`` (the tokenizers library's threads)."""
    from glmdata.tokenizer import load_tokenizer, tiktoken_encoding

    tokenizer = load_tokenizer(tokenizer_dir)
    # A tokenizer.json's own batch call is the tokenizers library's, even where glmdata encodes it with tiktoken.
    encoding = None if (Path(tokenizer_dir) / "tokenizer.json").is_file() else tiktoken_encoding(tokenizer)
    texts = [r.text for r in _read_rendered(rendered_path)]

    def encode(batch: list[str]) -> list[list[int]]:
        if encoding is not None:
            return encoding.encode_batch(batch, allowed_special="all")
        return tokenizer(batch, add_special_tokens=False)["input_ids"]

    encode([_warm_up().text] * 2)  # the first call starts the threads
    start = time.perf_counter()
    ids = [row for batch in _batches(texts, TOKENIZE_BATCH) for row in encode(batch)]
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": len(texts),
        "outputs": len(ids),
        "tokens": sum(map(len, ids)),
        "digest": _ids_digest(ids),
        "encoder": "tiktoken" if encoding is not None else "tokenizers",
    }


def encode_masks(rendered_path: str, tokenizer_dir: str) -> dict[str, Any]:
    """glmdata.masks.encode_batch on the same rendered text, batches of ``TOKENIZE_BATCH``: ids,
    labels and assistant masks."""
    from glmdata.masks import encode_batch
    from glmdata.tokenizer import load_tokenizer, tiktoken_encoding

    tokenizer = load_tokenizer(tokenizer_dir)
    rendered = _read_rendered(rendered_path)
    encode_batch([_warm_up()] * 2, tokenizer)  # checks the tokenizer once, as any first call does
    start = time.perf_counter()
    rows = [row for batch in _batches(rendered, TOKENIZE_BATCH) for row in encode_batch(batch, tokenizer)]
    seconds = time.perf_counter() - start
    ids = [row["input_ids"] for row in rows]
    return {
        "seconds": seconds,
        "rows": len(rendered),
        "outputs": len(rows),
        "tokens": sum(map(len, ids)),
        "digest": _ids_digest(ids),
        "labels": _ids_digest(row["labels"] for row in rows),
        "encoder": "tiktoken" if tiktoken_encoding(tokenizer) is not None else "tokenizers",
    }


def save_tokenizer_json(tokenizer_dir: str, target: str) -> dict[str, Any]:
    """Set-up, not a contender: the tokenizer of ``tokenizer_dir`` saved as a ``tokenizer.json``
    directory (the layout glm-4-9b-chat-hf ships), the same vocabulary."""
    from glmdata.tokenizer import load_tokenizer

    start = time.perf_counter()
    load_tokenizer(tokenizer_dir).save_pretrained(target)
    return {"seconds": time.perf_counter() - start, "rows": 0, "outputs": 0, "digest": ""}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "floor": floor,
    "convert": convert,
    "render-ours": render_ours,
    "render-theirs": render_theirs,
    "spans": spans,
    "encode-bare": encode_bare,
    "encode-masks": encode_masks,
    "save-tokenizer-json": save_tokenizer_json,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tasks")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--workers", type=int)
    ns = parser.parse_args(argv)
    kwargs: dict[str, Any] = {} if ns.workers is None else {"workers": ns.workers}
    result = TASKS[ns.task](*ns.args, **kwargs)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
