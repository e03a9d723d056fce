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

REPO = Path(__file__).resolve().parents[1]
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


# --- 1. baseline vs ours --------------------------------------------------------------------


def baseline(json_path: str) -> dict[str, Any]:
    """The tutorial: json.load, formatting_func, apply_chat_template(tokenize=False)."""
    from bench.tutorial import build_tokenizer, formatting_func

    tokenizer = build_tokenizer()
    start = time.perf_counter()
    with open(json_path, encoding="utf-8") as f:
        rows = json.load(f)
    texts = [tokenizer.apply_chat_template(formatting_func(row), tokenize=False) for row in rows]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(rows), "outputs": len(texts), "digest": _digest(texts)}


def pipeline(json_path: str) -> dict[str, Any]:
    """glmdata: convert (repairs + every check) and render every kept row, streaming the file."""
    from glmdata.convert import convert_file
    from glmdata.render import render

    start = time.perf_counter()
    rows = 0
    texts = []
    for result in convert_file(json_path):
        rows += 1
        if result.ok:
            texts.append(render(result.row["messages"]))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "outputs": len(texts), "digest": _digest(texts)}


# --- 2. floor vs convert --------------------------------------------------------------------


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
    from glmdata.io import dump_row

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
                bad.write(dump_row(result.reject_record(jsonl_path)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "outputs": kept, "digest": _file_digest(out_path)}


def chunks(jsonl_path: str, out_path: str, workers: int = 1) -> dict[str, Any]:
    """What `glmdata convert` does after start-up: glmdata.convert_chunks, each chunk's rows and
    rejects written as the command writes them. Timed in process, it is the part of the command
    that ``--workers`` can split; the rest, start-up, runs once whatever the workers."""
    from glmdata.convert import Options, convert_chunks
    from glmdata.io import dump_row

    start = time.perf_counter()
    rows = kept = 0
    with open(out_path, "wb") as out, open(out_path + ".rejects", "wb") as bad:
        for chunk in convert_chunks(jsonl_path, Options(), workers=workers):
            rows += chunk.report.rows_in
            kept += chunk.report.rows_out
            out.write(chunk.output)
            for result in chunk.rejected:
                bad.write(dump_row(result.reject_record(jsonl_path)))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "outputs": kept, "digest": _file_digest(out_path)}


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- 3. render ------------------------------------------------------------------------------


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


# --- 4. tokenize + masks --------------------------------------------------------------------


def _dump_tokens(path: str | None, ids: list[list[int]], masks: list[list[int]]) -> None:
    if path:
        import orjson

        with open(path, "wb") as out:
            for row_ids, row_masks in zip(ids, masks):
                out.write(orjson.dumps([row_ids, row_masks]) + b"\n")


def tokenize_ours(messages_path: str, tokenizer_dir: str, dump: str | None = None, via_tokenizer: bool = False) -> dict[str, Any]:
    """glmdata.masks.tokenize_batch: render with spans, tokenize, labels and masks.

    ``via_tokenizer``: encode through the transformers tokenizer's own call, as glmdata does for
    any tokenizer not converted from tiktoken files (e.g. a tokenizer.json of glm-4-9b-chat-hf).
    """
    import glmdata.tokenizer
    from glmdata.masks import tokenize_batch
    from glmdata.tokenizer import load_tokenizer

    if via_tokenizer:
        glmdata.tokenizer.tiktoken_encoding = lambda tokenizer: None

    tokenizer = load_tokenizer(tokenizer_dir)
    rows = _read_messages(messages_path)
    tokenize_batch({"messages": rows[:2]}, tokenizer)  # checks the tokenizer once, as any first call does
    start = time.perf_counter()
    ids: list[list[int]] = []
    masks: list[list[int]] = []
    for batch in _batches(rows, TOKENIZE_BATCH):
        out = tokenize_batch({"messages": batch}, tokenizer)
        ids += out["input_ids"]
        masks += out["assistant_masks"]
    seconds = time.perf_counter() - start
    tokens = sum(map(len, ids))
    # Ours ends every row with the <|user|> the official demo appends; the template does not.
    digest = _digest(json.dumps(row[:-1]) for row in ids)
    _dump_tokens(dump, [row[:-1] for row in ids], [row[:-1] for row in masks])
    return {"seconds": seconds, "rows": len(rows), "outputs": len(ids), "tokens": tokens, "digest": digest}


def tokenize_theirs(messages_path: str, tokenizer_dir: str, dump: str | None = None) -> dict[str, Any]:
    """apply_chat_template(tokenize=True, return_assistant_tokens_mask=True, return_dict=True) with
    the generation-marker template, in batches (faster for it than one row at a time)."""
    from glmdata.render import GENERATION_TEMPLATE, load_template
    from glmdata.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    template = load_template(GENERATION_TEMPLATE).text
    rows = _read_messages(messages_path)
    options = dict(chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    tokenizer.apply_chat_template(rows[:2], **options)  # compiles the template, as any first call does
    start = time.perf_counter()
    ids: list[list[int]] = []
    masks: list[list[int]] = []
    for batch in _batches(rows, TOKENIZE_BATCH):
        out = tokenizer.apply_chat_template(batch, **options)
        ids += out["input_ids"]
        masks += out["assistant_masks"]
    seconds = time.perf_counter() - start
    digest = _digest(json.dumps(list(row)) for row in ids)
    _dump_tokens(dump, ids, masks)
    return {"seconds": seconds, "rows": len(rows), "outputs": len(ids), "tokens": sum(map(len, ids)), "digest": digest}


TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "baseline": baseline,
    "pipeline": pipeline,
    "floor": floor,
    "convert": convert,
    "chunks": chunks,
    "render-ours": render_ours,
    "render-theirs": render_theirs,
    "tokenize-ours": tokenize_ours,
    "tokenize-theirs": tokenize_theirs,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tasks")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--dump")
    parser.add_argument("--via-tokenizer", action="store_true")
    ns = parser.parse_args(argv)
    kwargs: dict[str, Any] = {}
    if ns.workers is not None:
        kwargs["workers"] = ns.workers
    if ns.dump:
        kwargs["dump"] = ns.dump
    if ns.via_tokenizer:
        kwargs["via_tokenizer"] = True
    result = TASKS[ns.task](*ns.args, **kwargs)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
