"""Token ids and loss labels for a conversation: the one implementation, for ``glmdata render``,
``glmdata stats`` and the trainer alike.

The training text and its trained character spans come from ``glmdata.render.render_spans``. Every
span starts and ends on a role tag, and GLM-4's tokenizer keeps each tag as one special token. So
the ids are the tokenizer's own for the whole text (its batch call, on its threads, without
offsets), the text is split at its special tokens to know where each tag is, the k-th tag of the
text is the k-th special id of the ids (a list search finds it), and each piece between tags is
trained or not as a whole: no work per token beyond building the label lists. A span edge that does
not fall on a tag means the text or the tokenizer does not follow GLM-4's tags, and raises
``MaskError`` rather than training on a wrong mask.

A tokenizer that ``glmdata.tokenizer.load_tokenizer`` loaded from glm-4-9b-chat's tiktoken files, or
from a ``tokenizer.json`` whose byte-level BPE tiktoken encodes alike (glm-4-9b-chat-hf's), is encoded
with tiktoken (``glmdata.tokenizer.tiktoken_encoding``: ``encode(text, allowed_special="all")``, the
same ids, about twice as fast on this vocabulary); every other fast tokenizer with its ``tokenizers``
backend (``encode_batch`` with ``add_special_tokens=False``: the ids of its own ``__call__``).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

from glmdata import jsontext
from glmdata.families import Reasoning
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
    reasoning: Reasoning = "text",
) -> dict[str, list[int]]:
    """Tokenize a conversation for training.

    Returns ``input_ids``, ``labels`` (the id where the token is trained, ``IGNORE_INDEX``
    elsewhere; aligned with ``input_ids``, the model shifts them) and ``assistant_masks`` (1 where
    trained). The text is ``render_spans(messages, train_on=..., template=..., reasoning=...).text``,
    so it ends with the tag that ends the last turn (the ``<|user|>`` the official demo appends);
    ``train_on`` semantics are those of ``render_spans``. With ``max_length``, all three lists are cut to that many tokens, as the
    demo does (``truncation_report`` says what a cut loses). Raises ``NothingToTrain`` when
    nothing is trained and ``MaskError`` when ``tokenizer`` lacks the GLM-4 special tokens.
    """
    rendered = render_spans(messages, train_on=train_on, template=template, reasoning=reasoning)
    return encode_rendered(rendered, tokenizer, max_length=max_length)


def encode_rendered(rendered: Rendered, tokenizer: Any, *, max_length: int | None = None) -> dict[str, list[int]]:
    """Tokenize a ``Rendered`` text and label the tokens inside its spans (see ``tokenize``)."""
    [row] = _encode([rendered], _encoder(tokenizer), lambda input_ids, ranges: _labelled(input_ids, ranges, max_length))
    return row


def encode_batch(
    rendered: Sequence[Rendered], tokenizer: Any, *, max_length: int | None = None
) -> list[dict[str, list[int]]]:
    """``encode_rendered`` for many texts at once, encoded in one batch call of the tokenizer (its
    threads at work). Errors name the row's position (``row 3 of the batch: ...``)."""
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
    reasoning: Reasoning = "text",
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
            rendered.append(render_spans(_messages(value), train_on=train_on, template=template, reasoning=reasoning))
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
    reasoning: Reasoning = "text",
) -> TruncationReport:
    """Say what ``tokenize(messages, tokenizer, max_length=max_length, ...)`` cuts off.

    ``cut_inside_trained_turn`` is true when the last kept token and the first cut token belong
    to the same trained turn (span), i.e. the model is taught an answer that stops mid-way.
    """
    [turn] = token_spans([render_spans(messages, train_on=train_on, template=template, reasoning=reasoning)], tokenizer)
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


def _encode(
    rendered: Sequence[Rendered], encoder: _Encoder, finish: Callable[[list[int], Ranges], R], where: str = ""
) -> list[R]:
    """``finish(input_ids, ranges)`` for each rendered text: its token ids and the token ranges of
    its trained spans. ``where`` (with ``{}`` for the row's position) prefixes ``MaskError``s."""
    out = []
    for index, (r, input_ids) in enumerate(zip(rendered, encoder.encode([r.text for r in rendered]), strict=True)):
        try:
            ranges = _ranges(r, input_ids, encoder)
        except MaskError as e:
            raise MaskError(where.format(index) + str(e)) from None
        out.append(finish(input_ids, ranges))
    return out


def _ranges(rendered: Rendered, input_ids: list[int], encoder: _Encoder) -> Ranges:
    """The token ranges of the trained spans. The k-th special token in the text is the k-th
    special id in ``input_ids`` (the text between them never encodes to one), so a list search finds
    where each tag is; every span edge must be the edge of a tag."""
    text = rendered.text
    pieces = encoder.split(text)  # [text, tag, text, tag, ..., text]
    ends = list(accumulate(map(len, pieces)))
    tokens_at = {0: 0, len(text): len(input_ids)}  # character offset of a tag's edge -> token index
    position = -1
    for k in range(1, len(pieces), 2):
        try:
            position = input_ids.index(encoder.tag_ids[pieces[k]], position + 1)
        except ValueError:
            raise MaskError(
                f"the tokenizer did not encode {pieces[k]!r} at character {ends[k - 1]} as its special token"
            ) from None
        tokens_at[ends[k - 1]] = position
        tokens_at[ends[k]] = position + 1
    if encoder.text_may_encode_to_tags and sum(map(encoder.tag_id_set.__contains__, input_ids)) != len(pieces) // 2:
        raise MaskError("the tokenizer encodes text between special tokens to a special token (its normalizer)")
    ranges = []
    for k, (a, b) in enumerate(rendered.spans):
        i, j = tokens_at.get(a), tokens_at.get(b)
        if i is None or j is None:
            raise MaskError(_off_tag(text, a if i is None else b))
        ranges.append((i, j, k))
    return ranges


def _off_tag(text: str, edge: int) -> str:
    return (
        f"a trained span starts or ends at character {edge} ({text[max(edge - 12, 0) : edge]!r} | "
        f"{text[edge : edge + 12]!r}), which is not the edge of a special token: the tokenizer does not split "
        "the text at GLM-4's role tags, a role is not one of GLM-4's (system, user, assistant, observation), or the "
        "template writes tags that the tokenizer does not have as special tokens (GLM-4.5/4.6's <think> and "
        "</think>: use the model's own tokenizer with its template)"
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
    """How one tokenizer, as it is now, encodes rendered text: its batch call (the ids of whole
    texts, as its own ``__call__`` gives them, without offsets), the special tokens it splits text at
    (every one, not only GLM-4's: the walk in ``_ranges`` must meet all of them) and their ids."""

    def __init__(
        self, encode: Callable[[list[str]], list[list[int]]], tag_ids: dict[str, int], text_may_encode_to_tags: bool
    ) -> None:
        self.encode = encode
        self.tag_ids = tag_ids
        self.tag_id_set = set(tag_ids.values())
        self.text_may_encode_to_tags = text_may_encode_to_tags
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
    try:
        _encoders[tokenizer] = (state, encoder)
    except TypeError:
        pass
    return encoder


def _tiktoken_encoder(encoding: Any) -> _Encoder:
    def encode_chunk(texts: Sequence[str]) -> list[list[int]]:
        return [encoding.encode(text, allowed_special="all") for text in texts]

    # tiktoken matches its special tokens exactly and encode_ordinary never gives one.
    tags = {token: encoding.encode_single_token(token) for token in encoding.special_tokens_set}
    return _Encoder(lambda texts: _in_threads(encode_chunk, texts), tags, text_may_encode_to_tags=False)


def _backend_encoder(tokenizer: Any) -> _Encoder:
    backend = tokenizer.backend_tokenizer
    if getattr(tokenizer, "split_special_tokens", False):
        raise MaskError(
            "the tokenizer is set to split special tokens (split_special_tokens=True): GLM-4's role tags "
            "would be tokenized as plain text; set it to False"
        )
    # The tokenizers library first splits text at its added tokens matched on the raw text
    # (normalized=False), leftmost-longest, as `_Encoder.split` does.
    added = [(i, t) for i, t in backend.get_added_tokens_decoder().items() if not t.normalized]
    stripping = [t.content for _, t in added if t.lstrip or t.rstrip or t.single_word]
    if stripping:
        raise MaskError(
            f"the tokenizer's special tokens {', '.join(stripping)} take the spaces around them (lstrip, rstrip or "
            "single_word): a tag's token would not end where the tag does"
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

    # Text that only a normalizer turns into a tag (full-width look-alikes under NFKC, say) could
    # encode to a tag's id: then each row's tag ids are counted.
    tags = {t.content: i for i, t in added}
    return _Encoder(encode, tags, text_may_encode_to_tags=backend.normalizer is not None)


# Texts per task when tiktoken encodes a batch on several threads (it releases the GIL).
_CHUNK = 32
_pool: tuple[int, Any] | None = None  # (pid, ThreadPoolExecutor): a forked child makes its own


def _threads() -> int:
    if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("0", "false", "no", "off"):
        return 1  # the switch that also keeps the tokenizers library on one thread
    try:
        return min(len(os.sched_getaffinity(0)), 16)
    except AttributeError:  # pragma: no cover - not on Linux
        return min(os.cpu_count() or 1, 16)


def _in_threads(encode: Callable[[Sequence[str]], list[list[int]]], texts: list[str]) -> list[list[int]]:
    """``encode(texts)``, spread over the available cores in chunks, in order, like a fast
    tokenizer's batch call (tiktoken's own batch call starts a thread pool per call and hands it
    one text at a time, which costs more than it gains)."""
    global _pool

    threads = _threads()
    if threads < 2 or len(texts) < 2 * _CHUNK:
        return encode(texts)
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _pool = (os.getpid(), ThreadPoolExecutor(threads, thread_name_prefix="glmdata-tokenize"))
    chunks = [texts[i : i + _CHUNK] for i in range(0, len(texts), _CHUNK)]
    return [ids for chunk in _pool[1].map(encode, chunks) for ids in chunk]
