"""Token ids and loss labels for a conversation: the one implementation, for ``glmdata render`` and
the trainer alike.

The training text and its trained character spans come from ``glmdata.render.render_spans``; the
text is tokenized once with offsets, and a token is trained if and only if its characters lie
inside a trained span. Span edges always fall on role tags, which GLM-4's tokenizer keeps as single
special tokens, so no token straddles an edge; one that does means the tokenizer does not know
the GLM-4 tags, and raises ``MaskError`` rather than training on a wrong mask.

A tokenizer that ``glmdata.tokenizer.load_tokenizer`` converted from glm-4-9b-chat's tiktoken files
is encoded with tiktoken itself (``glmdata.tokenizer.tiktoken_encoding``): the same ids, about three
times faster than the converted tokenizer on this vocabulary; offsets are then byte offsets,
summed from the tokens' byte lengths. Every other tokenizer goes through its own ``__call__``.
"""

from __future__ import annotations

import json
import os
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from glmdata.render import NothingToTrain, Rendered, Template, TemplateError, TrainOn, render_spans

__all__ = [
    "GLM4_CONTROL_TOKENS",
    "IGNORE_INDEX",
    "MaskError",
    "TruncationReport",
    "encode_rendered",
    "tokenize",
    "token_spans",
    "tokenize_batch",
    "truncation_report",
]

#: Label of a token that is not trained (ignored by the loss).
IGNORE_INDEX = -100
#: Tokens the GLM-4 template writes; the tokenizer must keep each as one special token.
GLM4_CONTROL_TOKENS = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")

# Tokenizers already checked for the control tokens (by object, without keeping them alive).
_checked_tokenizers: weakref.WeakSet[Any] = weakref.WeakSet()


class MaskError(ValueError):
    """The tokenizer cannot produce correct loss masks for GLM-4 text."""


def tokenize(
    messages: Sequence[Mapping[str, Any]],
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
    _check_tokenizer(tokenizer)
    [(input_ids, ranges)] = _encode([rendered], tokenizer)
    return _labelled(input_ids, ranges, max_length)


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
    Returns the three columns of ``tokenize`` for every row, in order (the texts are tokenized in
    one call, in parallel). Prefer JSON text: Arrow merges message structs across rows, so a
    message list loaded through ``datasets`` carries every key with ``None`` where a row had none
    (rendering treats those as absent, like ``apply_chat_template``) and tool schemas gain the
    properties of other rows' tools (which would be rendered). Errors name the row's position in
    the batch.
    """
    _check_tokenizer(tokenizer)
    rendered = []
    for index, value in enumerate(batch[column]):
        try:
            messages = _messages(value)
            rendered.append(render_spans(messages, train_on=train_on, template=template))
        except (ValueError, KeyError, TypeError) as e:
            kind = type(e) if isinstance(e, (NothingToTrain, TemplateError)) else ValueError
            raise kind(f"row {index} of the batch: {e}") from e
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "assistant_masks": []}
    for input_ids, ranges in _encode(rendered, tokenizer, where="row {} of the batch: "):
        row = _labelled(input_ids, ranges, max_length)
        for key, value in row.items():
            out[key].append(value)
    return out


def _messages(value: Any) -> Sequence[Mapping[str, Any]]:
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    if isinstance(value, Mapping):
        value = value["messages"]
    return value


def token_spans(rendered: Sequence[Rendered], tokenizer: Any) -> list[list[int]]:
    """For each rendered row, per token: the index of the trained span holding it (into
    ``rendered.spans``), or -1 for an untrained token.

    The building block of the labels, for statistics per turn; the texts are tokenized in one
    call. Raises ``MaskError`` like ``tokenize``.
    """
    _check_tokenizer(tokenizer)
    return [_turns(len(input_ids), ranges) for input_ids, ranges in _encode(rendered, tokenizer)]


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
    messages: Sequence[Mapping[str, Any]],
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


def _check_tokenizer(tokenizer: Any) -> None:
    try:
        if tokenizer in _checked_tokenizers:
            return
    except TypeError:  # not weak-referenceable: check every time
        pass
    if not getattr(tokenizer, "is_fast", False):
        raise MaskError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: loss masks need character offsets; "
            "load it with glmdata.tokenizer.load_tokenizer"
        )
    added = tokenizer.get_added_vocab()
    missing = [t for t in GLM4_CONTROL_TOKENS if t not in added]
    if missing:
        raise MaskError(
            f"the tokenizer does not have the GLM-4 special tokens {', '.join(missing)}: they would be "
            "tokenized as plain text; load GLM-4's tokenizer with glmdata.tokenizer.load_tokenizer"
        )
    try:
        _checked_tokenizers.add(tokenizer)
    except TypeError:
        pass


# Token index ranges of a row's trained spans: (first token, end token, span index), in order.
Ranges = list[tuple[int, int, int]]


def _encode(rendered: Sequence[Rendered], tokenizer: Any, where: str = "") -> list[tuple[list[int], Ranges]]:
    """Token ids of each rendered text, and the token ranges of its trained spans. ``where``
    (with ``{}`` for the row's position) prefixes ``MaskError``s."""
    from glmdata.tokenizer import tiktoken_encoding

    out = []
    encoding = tiktoken_encoding(tokenizer)
    if encoding is not None:
        lengths = _token_lengths(encoding)
        for index, (r, input_ids) in enumerate(zip(rendered, _tiktoken_ids(encoding, [r.text for r in rendered]))):
            try:
                out.append((input_ids, _ranges_from_bytes(input_ids, lengths, r)))
            except MaskError as e:
                raise MaskError(where.format(index) + str(e)) from e
        return out
    encodings = tokenizer([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    for index, r in enumerate(rendered):
        try:
            turn = _token_spans(encodings["offset_mapping"][index], r)
        except MaskError as e:
            raise MaskError(where.format(index) + str(e)) from e
        out.append((list(encodings["input_ids"][index]), _ranges_from_turns(turn)))
    return out


# Texts per task when a batch is encoded on several threads (tiktoken releases the GIL).
_CHUNK = 32
_pool: tuple[int, Any] | None = None  # (pid, ThreadPoolExecutor): a forked child makes its own


def _threads() -> int:
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("0", "false", "no", "off"):
        return 1  # the switch that also keeps transformers' tokenizers on one thread
    try:
        return min(len(os.sched_getaffinity(0)), 16)
    except AttributeError:  # pragma: no cover - not on Linux
        return min(os.cpu_count() or 1, 16)


def _tiktoken_ids(encoding: Any, texts: list[str]) -> list[list[int]]:
    """``encoding.encode(text, allowed_special="all")`` for every text, in order; batches are
    spread over the available cores, in chunks, like a fast tokenizer's batch call."""
    global _pool

    def encode(chunk: list[str]) -> list[list[int]]:
        return [encoding.encode(text, allowed_special="all") for text in chunk]

    threads = _threads()
    if threads < 2 or len(texts) < 2 * _CHUNK:
        return encode(texts)
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _pool = (os.getpid(), ThreadPoolExecutor(threads, thread_name_prefix="glmdata-tokenize"))
    chunks = [texts[i : i + _CHUNK] for i in range(0, len(texts), _CHUNK)]
    return [ids for chunk in _pool[1].map(encode, chunks) for ids in chunk]


# Byte length of every token id, by tiktoken encoding (by object, without keeping it alive).
_lengths: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()


def _token_lengths(encoding: Any) -> list[int]:
    lengths = _lengths.get(encoding)
    if lengths is None:
        lengths = []
        for token in range(encoding.n_vocab):
            try:
                lengths.append(len(encoding.decode_single_token_bytes(token)))
            except KeyError:  # an unused id: never produced
                lengths.append(0)
        _lengths[encoding] = lengths
    return lengths


def _ranges_from_bytes(input_ids: list[int], lengths: list[int], rendered: Rendered) -> Ranges:
    """The token ranges of the trained spans, for tokens given by their byte lengths: token t
    covers bytes ``[ends[t-1], ends[t])`` of the UTF-8 text. Raises ``MaskError`` for a token that
    crosses a span edge, as ``_token_spans`` does for character offsets."""
    ends = list(accumulate(map(lengths.__getitem__, input_ids)))
    n = len(input_ids)
    text = rendered.text
    ascii_text = text.isascii()
    ranges = []
    position = byte = 0  # a character position and its byte offset
    for k, (a, b) in enumerate(rendered.spans):
        first = a if ascii_text else byte + len(text[position:a].encode("utf-8"))
        stop = b if ascii_text else first + len(text[a:b].encode("utf-8"))
        position, byte = b, stop
        i = bisect_right(ends, first)  # the token holding byte `first`
        if i < n and (ends[i - 1] if i else 0) != first:
            raise _straddle_bytes(text, ends[i - 1] if i else 0, ends[i])
        j = bisect_left(ends, stop)  # the token holding byte `stop - 1`
        if j < n and ends[j] != stop:
            raise _straddle_bytes(text, ends[j - 1] if j else 0, ends[j])
        ranges.append((i, j + 1, k))
    return ranges


def _ranges_from_turns(turn: list[int]) -> Ranges:
    ranges: Ranges = []
    for t, k in enumerate(turn):
        if k >= 0:
            if ranges and ranges[-1][2] == k and ranges[-1][1] == t:
                ranges[-1] = (ranges[-1][0], t + 1, k)
            else:
                ranges.append((t, t + 1, k))
    return ranges


def _turns(n: int, ranges: Ranges) -> list[int]:
    turn = [-1] * n
    for i, j, k in ranges:
        turn[i:j] = [k] * (j - i)
    return turn


def _straddle_bytes(text: str, start: int, end: int) -> MaskError:
    data = text.encode("utf-8")
    chars = lambda position: len(data[:position].decode("utf-8", "ignore"))  # noqa: E731
    return _straddle(text, chars(start), chars(end))


def _token_spans(offsets: Sequence[Sequence[int]], rendered: Rendered) -> list[int]:
    """For each token, the index of the trained span holding it, or -1.

    Raises ``MaskError`` for a token that crosses a span edge.
    """
    spans = rendered.spans
    starts = [a for a, _ in spans]
    out = []
    for start, end in offsets:
        j = bisect_right(starts, start) - 1  # the last span starting at or before the token
        if j >= 0 and start < spans[j][1]:
            if end > spans[j][1]:
                raise _straddle(rendered.text, start, end)
            out.append(j)
        else:
            if j + 1 < len(spans) and end > spans[j + 1][0]:
                raise _straddle(rendered.text, start, end)
            out.append(-1)
    return out


def _straddle(text: str, start: int, end: int) -> MaskError:
    return MaskError(
        f"token at characters {start}..{end} ({text[start:end]!r}) crosses the edge of a trained span: "
        "the tokenizer does not split the text at GLM-4's role tags"
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
