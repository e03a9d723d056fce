"""Token ids and loss labels for a conversation: the one implementation, for ``glmdata render``,
``glmdata stats`` and the trainer alike.

The training text and its trained character spans come from ``glmdata.render.render_spans``. Every
span starts and ends on a role tag, and GLM-4's tokenizer keeps each tag as one special token and
encodes the text between two tags without looking across them. So the text is split at the
tokenizer's special tokens, the pieces between them are encoded as ordinary text (many rows'
pieces in one call, on several threads; a piece that repeats among them, such as a tools block or
a system prompt, once), each tag becomes its id, and a piece is trained or not as a whole: no work
per token beyond building the lists. A span edge that does not fall on a tag means the text or the
tokenizer does not follow GLM-4's tags, and raises ``MaskError`` rather than training on a wrong
mask.

The ids are exactly those of the tokenizer's own call on the whole text (``tokenizer(text,
add_special_tokens=False)``): for tiktoken that is how ``encode(text, allowed_special="all")``
works inside; for a ``tokenizers`` backend it is how its added vocabulary splits text before
anything else runs, and a probe checks it once per tokenizer. A tokenizer that
``glmdata.tokenizer.load_tokenizer`` converted from glm-4-9b-chat's tiktoken files is encoded with
tiktoken itself (``glmdata.tokenizer.tiktoken_encoding``: the same ids, several times faster on
this vocabulary); every other fast tokenizer with its ``tokenizers`` backend.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, TypeVar

from glmdata import jsontext
from glmdata.models import MessageDict
from glmdata.render import NothingToTrain, Rendered, Template, TemplateError, TrainOn, render_spans

__all__ = [
    "GLM4_CONTROL_TOKENS",
    "IGNORE_INDEX",
    "MaskError",
    "TruncationReport",
    "encode_batch",
    "encode_rendered",
    "token_spans",
    "tokenize",
    "tokenize_batch",
    "truncation_report",
]

#: Label of a token that is not trained (ignored by the loss).
IGNORE_INDEX = -100
#: Tokens the GLM-4 template writes; the tokenizer must keep each as one special token.
GLM4_CONTROL_TOKENS = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")


class MaskError(ValueError):
    """The tokenizer cannot produce correct loss masks for GLM-4 text."""


def tokenize(
    messages: Sequence[MessageDict],
    tokenizer: Any,
    *,
    train_on: TrainOn = "assistant",
    max_length: int | None = None,
    template: str | Path | Template | None = None,
) -> dict[str, list[int]]:
    """Tokenize a conversation for training.

    Returns ``input_ids``, ``labels`` (the id where the token is trained, ``IGNORE_INDEX``
    elsewhere; aligned with ``input_ids``, the model shifts them) and ``assistant_masks`` (1 where
    trained). The text is ``render_spans(messages, train_on=..., template=...).text``, so it ends
    with the ``<|user|>`` the official demo appends; ``train_on`` semantics are those of
    ``render_spans``. With ``max_length``, all three lists are cut to that many tokens, as the
    demo does (``truncation_report`` says what a cut loses). Raises ``NothingToTrain`` when
    nothing is trained and ``MaskError`` when ``tokenizer`` lacks the GLM-4 special tokens.
    """
    rendered = render_spans(messages, train_on=train_on, template=template)
    return encode_rendered(rendered, tokenizer, max_length=max_length)


def encode_rendered(rendered: Rendered, tokenizer: Any, *, max_length: int | None = None) -> dict[str, list[int]]:
    """Tokenize a ``Rendered`` text and label the tokens inside its spans (see ``tokenize``)."""
    [row] = _encode([rendered], _encoder(tokenizer), lambda input_ids, ranges: _labelled(input_ids, ranges, max_length))
    return row


def encode_batch(
    rendered: Sequence[Rendered], tokenizer: Any, *, max_length: int | None = None
) -> list[dict[str, list[int]]]:
    """``encode_rendered`` for many texts at once: the text between tags of all of them is encoded
    in one call of the tokenizer (its threads at work), each distinct piece once. Errors name the
    row's position (``row 3 of the batch: ...``)."""
    return _encode(
        rendered,
        _encoder(tokenizer),
        lambda input_ids, ranges: _labelled(input_ids, ranges, max_length),
        "row {} of the batch: ",
    )


def tokenize_batch(
    batch: Mapping[str, Sequence[Any]],
    tokenizer: Any,
    *,
    train_on: TrainOn = "assistant",
    max_length: int | None = None,
    template: str | Path | Template | None = None,
    column: str = "messages",
) -> dict[str, list[list[int]]]:
    """``tokenize`` for a batch, usable as ``dataset.map(fn, batched=True)``.

    Each value of ``batch[column]`` is a message list, or JSON text of a row (``{"messages": [...]}``)
    or of a message list, such as the ``glm_json`` column of ``glmdata.convert.convert_batch``.
    Returns the three columns of ``tokenize`` for every row, in order (encoded as ``encode_batch``
    does). Prefer JSON text: Arrow merges message structs across rows, so a message list loaded
    through ``datasets`` carries every key with ``None`` where a row had none (rendering treats
    those as absent, like ``apply_chat_template``) and tool schemas gain the properties of other
    rows' tools (which would be rendered). Errors name the row's position in the batch.
    """
    _encoder(tokenizer)  # a tokenizer that cannot give masks is refused before any rendering
    rendered = []
    for index, value in enumerate(batch[column]):
        try:
            rendered.append(render_spans(_messages(value), train_on=train_on, template=template))
        except (ValueError, KeyError, TypeError) as e:
            kind = type(e) if isinstance(e, (NothingToTrain, TemplateError)) else ValueError
            raise kind(f"row {index} of the batch: {e}") from e
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "assistant_masks": []}
    for row in encode_batch(rendered, tokenizer, max_length=max_length):
        for key, value in row.items():
            out[key].append(value)
    return out


def _messages(value: Any) -> Sequence[MessageDict]:
    if isinstance(value, (str, bytes)):
        value = jsontext.loads(value)
    if isinstance(value, Mapping):
        value = value["messages"]
    return value


def token_spans(rendered: Sequence[Rendered], tokenizer: Any) -> list[list[int]]:
    """For each rendered row, per token: the index of the trained span holding it (into
    ``rendered.spans``), or -1 for an untrained token.

    The building block of the labels, for statistics per turn; encoded as ``encode_batch`` does.
    Raises ``MaskError`` like ``tokenize``.
    """
    return _encode(rendered, _encoder(tokenizer), _turns)


def _turns(input_ids: list[int], ranges: Ranges) -> list[int]:
    turn = [-1] * len(input_ids)
    for i, j, k in ranges:
        turn[i:j] = [k] * (j - i)
    return turn


@dataclass(frozen=True)
class TruncationReport:
    """What cutting a row to ``max_length`` tokens keeps and loses."""

    tokens: int  #: tokens in the whole row
    trained_tokens: int  #: trained tokens in the whole row
    max_length: int | None
    truncated: bool  #: whether ``max_length`` cuts the row
    tokens_cut: int
    trained_tokens_cut: int
    cut_inside_trained_turn: bool  #: the cut splits a trained turn: it is trained on a partial answer

    @property
    def trained_tokens_kept(self) -> int:
        return self.trained_tokens - self.trained_tokens_cut


def truncation_report(
    messages: Sequence[MessageDict],
    tokenizer: Any,
    max_length: int | None,
    *,
    train_on: TrainOn = "assistant",
    template: str | Path | Template | None = None,
) -> TruncationReport:
    """Say what ``tokenize(messages, tokenizer, max_length=max_length, ...)`` cuts off.

    ``cut_inside_trained_turn`` is true when the last kept token and the first cut token belong
    to the same trained turn (span), i.e. the model is taught an answer that stops mid-way.
    """
    [turn] = token_spans([render_spans(messages, train_on=train_on, template=template)], tokenizer)
    tokens = len(turn)
    trained = sum(t >= 0 for t in turn)
    if max_length is None or tokens <= max_length:
        return TruncationReport(tokens, trained, max_length, False, 0, 0, False)
    cut = turn[max_length:]
    inside = max_length > 0 and turn[max_length - 1] >= 0 and turn[max_length - 1] == turn[max_length]
    return TruncationReport(tokens, trained, max_length, True, len(cut), sum(t >= 0 for t in cut), inside)


# --- encoding ------------------------------------------------------------------------------------

# Token index ranges of a row's trained spans: (first token, end token, span index), in order.
Ranges = list[tuple[int, int, int]]
R = TypeVar("R")
T = TypeVar("T")


def _encode(
    rendered: Sequence[Rendered], encoder: _Encoder, finish: Callable[[list[int], Ranges], R], where: str = ""
) -> list[R]:
    """``finish(input_ids, ranges)`` for each rendered text: its token ids and the token ranges of
    its trained spans. ``where`` (with ``{}`` for the row's position) prefixes ``MaskError``s."""
    if not encoder.rows_per_task:
        return _encode_rows(rendered, 0, encoder, finish, where)

    # Rows in chunks over the available cores: tiktoken releases the GIL, so one chunk's Python work
    # runs while others encode.
    def encode_chunk(start: int) -> list[R]:
        return _encode_rows(rendered[start : start + encoder.rows_per_task], start, encoder, finish, where)

    starts = range(0, len(rendered), encoder.rows_per_task)
    return [row for chunk in _in_threads(encode_chunk, starts) for row in chunk]


def _encode_rows(
    rendered: Sequence[Rendered], first: int, encoder: _Encoder, finish: Callable[[list[int], Ranges], R], where: str
) -> list[R]:
    # [text, tag, text, tag, ..., text] for each row; each distinct text encoded once, in one call
    pieces = [encoder.split(r.text) for r in rendered]
    texts = list(dict.fromkeys(p for row in pieces for p in row[::2] if p))
    ids_of = {"": [], **encoder.tag_lists, **dict(zip(texts, encoder.encode(texts), strict=True))}
    out = []
    for index, (r, row) in enumerate(zip(rendered, pieces, strict=True), first):
        row_ids = list(map(ids_of.__getitem__, row))
        input_ids = list(chain.from_iterable(row_ids))
        # the character offset of each piece's end -> the token index there
        tokens_at = dict(zip(accumulate(map(len, row)), accumulate(map(len, row_ids)), strict=True))
        tokens_at[0] = 0
        ranges = []
        for k, (a, b) in enumerate(r.spans):
            i, j = tokens_at.get(a), tokens_at.get(b)
            if i is None or j is None:
                raise MaskError(where.format(index) + _off_tag(r.text, a if i is None else b))
            ranges.append((i, j, k))
        out.append(finish(input_ids, ranges))
    return out


def _off_tag(text: str, edge: int) -> str:
    return (
        f"a trained span starts or ends at character {edge} ({text[max(edge - 12, 0) : edge]!r} | "
        f"{text[edge : edge + 12]!r}), which is not the edge of a special token: the tokenizer does not split "
        "the text at GLM-4's role tags, or a role is not one of GLM-4's (system, user, assistant, observation)"
    )


def _labelled(input_ids: list[int], ranges: Ranges, max_length: int | None) -> dict[str, list[int]]:
    n = len(input_ids)
    labels = [IGNORE_INDEX] * n
    masks = [0] * n
    for i, j, _ in ranges:
        labels[i:j] = input_ids[i:j]
        masks[i:j] = [1] * (j - i)
    if max_length is not None:
        input_ids, labels, masks = input_ids[:max_length], labels[:max_length], masks[:max_length]
    return {"input_ids": input_ids, "labels": labels, "assistant_masks": masks}


# --- one tokenizer's encoder ---------------------------------------------------------------------


class _Encoder:
    """How one tokenizer, as it is now, encodes rendered text: the special tokens it splits the text
    at and their ids, the batch call for the text between them, and how many rows to hand each of
    glmdata's threads (0: the call has threads of its own, give it the whole batch)."""

    def __init__(
        self, tag_ids: dict[str, int], encode: Callable[[list[str]], list[list[int]]], rows_per_task: int
    ) -> None:
        self.rows_per_task = rows_per_task
        self.tag_ids = tag_ids
        self.tag_lists = {tag: [i] for tag, i in tag_ids.items()}
        self.encode = encode
        # Longest first: where two tags start at one place, the longer wins, as in the tokenizers'
        # added vocabulary (leftmost-longest). A capturing group makes `split` keep the tags.
        alternatives = "|".join(map(re.escape, sorted(tag_ids, key=len, reverse=True)))
        self.split: Callable[[str], list[str]] = re.compile(f"({alternatives})").split


# Encoders by tokenizer (without keeping it alive), with the state they were built for.
_encoders: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], _Encoder]] = weakref.WeakKeyDictionary()


def _encoder(tokenizer: Any) -> _Encoder:
    """The encoder of ``tokenizer``; raises ``MaskError`` for a tokenizer that cannot give masks."""
    import glmdata.tokenizer  # looked up on each call: the benchmark switches the tiktoken path off

    encoding = glmdata.tokenizer.tiktoken_encoding(tokenizer)
    if encoding is None and getattr(tokenizer, "backend_tokenizer", None) is None:
        raise MaskError(
            f"{type(tokenizer).__name__} is not a fast tokenizer (it has no tokenizers backend); "
            "load it with glmdata.tokenizer.load_tokenizer"
        )
    # Tokens added or a setting changed since: build again.
    state = (len(tokenizer), bool(getattr(tokenizer, "split_special_tokens", False)), encoding)
    try:
        known = _encoders.get(tokenizer)
    except TypeError:  # not weak-referenceable: build every time
        known = None
    if known is not None and known[0] == state:
        return known[1]
    encoder = _tiktoken_encoder(encoding) if encoding is not None else _backend_encoder(tokenizer)
    missing = [t for t in GLM4_CONTROL_TOKENS if t not in encoder.tag_ids]
    if missing:
        raise MaskError(
            f"the tokenizer does not have the GLM-4 special tokens {', '.join(missing)}: they would be "
            "tokenized as plain text; load GLM-4's tokenizer with glmdata.tokenizer.load_tokenizer"
        )
    _probe(tokenizer, encoder)
    try:
        _encoders[tokenizer] = (state, encoder)
    except TypeError:
        pass
    return encoder


def _tiktoken_encoder(encoding: Any) -> _Encoder:
    # tiktoken's encode(text, allowed_special="all") splits at its special tokens and encodes each
    # piece between them with encode_ordinary: the same as here.
    def encode(texts: list[str]) -> list[list[int]]:
        return [encoding.encode_ordinary(text) for text in texts]

    tags = {token: encoding.encode_single_token(token) for token in encoding.special_tokens_set}
    return _Encoder(tags, encode, rows_per_task=32)


def _backend_encoder(tokenizer: Any) -> _Encoder:
    backend = tokenizer.backend_tokenizer
    if getattr(tokenizer, "split_special_tokens", False):
        raise MaskError(
            "the tokenizer is set to split special tokens (split_special_tokens=True): GLM-4's role tags "
            "would be tokenized as plain text; set it to False"
        )
    # The tokenizers library splits text at its added tokens that are matched on the raw text
    # (normalized=False) before anything else: the pieces between them are encoded on their own.
    added = [(i, t) for i, t in backend.get_added_tokens_decoder().items() if not t.normalized]
    stripping = [t.content for _, t in added if t.lstrip or t.rstrip or t.single_word]
    if stripping:
        raise MaskError(
            f"the tokenizer's special tokens {', '.join(stripping)} take the spaces around them (lstrip, rstrip or "
            "single_word): the text between GLM-4's tags would not be encoded as written"
        )
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets: tokenizers >= 0.21

    def encode(texts: list[str]) -> list[list[int]]:
        # As the tokenizer's own __call__ does before each call: an earlier call's padding,
        # truncation or split_special_tokens may still be set on the backend.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        if backend.encode_special_tokens:
            backend.encode_special_tokens = False
        return [e.ids for e in encode_batch(texts, add_special_tokens=False)]

    return _Encoder({t.content: i for i, t in added}, encode, rows_per_task=0)


# Text with all of GLM-4's tags and the spaces, newlines and scripts around them that rendered rows
# have: encoded piece by piece, it must give the tokenizer's own ids for the whole text. A
# tokenizer that encodes a piece differently at the start of a text (a SentencePiece "▁" added to
# each piece, say) fails here.
_PROBE = (
    '[gMASK]<sop><|system|>\n 你是助手。\n\n# 可用工具\n## f\n\n{\n    "a": 1\n}<|user|>  hi there \n'
    '<|assistant|>f\n{"a": 1}<|observation|>\n 20 <|assistant|>\nOK, ok  <|user|>'
)


def _probe(tokenizer: Any, encoder: _Encoder) -> None:
    [ours] = _encode([Rendered(_PROBE, [])], encoder, lambda input_ids, _: input_ids)
    theirs = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    if ours != theirs:
        raise MaskError(
            "the tokenizer encodes the text between GLM-4's special tokens differently when it stands alone "
            "(e.g. it adds a space at the start of each piece): glmdata cannot give its ids piece by piece"
        )


_pool: tuple[int, Any] | None = None  # (pid, ThreadPoolExecutor): a forked child makes its own


def _threads() -> int:
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("0", "false", "no", "off"):
        return 1  # the switch that also keeps the tokenizers library on one thread
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    # At least as many as tiktoken's own encode_batch (8): on a machine busy with other work, fewer
    # threads than that got a smaller share of it and measured up to 1.8x slower.
    return min(max(cores, 8), 16)


def _in_threads(fn: Callable[[int], T], items: Sequence[int]) -> list[T]:
    """``[fn(item) for item in items]``, spread over the available cores (inline for one item)."""
    global _pool

    threads = _threads()
    if threads < 2 or len(items) < 2:
        return [fn(item) for item in items]
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _pool = (os.getpid(), ThreadPoolExecutor(threads, thread_name_prefix="glmdata-tokenize"))
    return list(_pool[1].map(fn, items))
