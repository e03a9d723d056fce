"""Tokenized datasets: convert once, train many.

``glmdata tokenize`` writes a Parquet file with one row per conversation: ``input_ids``, ``labels``
(``IGNORE_INDEX`` where not trained), ``assistant_masks`` and ``row`` (the source row's index), the
columns TRL's ``SFTTrainer`` takes as a pre-tokenized dataset. The file's metadata (key
``glmdata.tokenized``) says what it was made with: a fingerprint of the tokenizer, of the chat
template, and the ``train_on`` and ``max_length`` settings. ``glmtrain run FILE.parquet`` trains on
it without tokenizing again, after ``check`` has refused a file made with another tokenizer or
template. Needs pyarrow (``pip install 'glmdata[parquet]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate, chain
from typing import IO, Any

from glmdata.render import Template

__all__ = ["COLUMNS", "METADATA_KEY", "Provenance", "check", "provenance", "read_provenance", "write"]

METADATA_KEY = b"glmdata.tokenized"
COLUMNS = ("input_ids", "labels", "assistant_masks", "row")


@dataclass(frozen=True)
class Provenance:
    """What a tokenized file was made with."""

    tokenizer: str  #: sha256 of the tokenizer's full definition (vocabulary, special tokens, settings)
    template: str  #: sha256 of the chat template's text
    train_on: str
    max_length: int | None
    tokenizer_name: str = ""  #: where the tokenizer came from, for messages
    template_name: str = ""
    reasoning: str = "text"  #: ``--reasoning`` (files made before it existed: "text", what they did)

    def same_tokens_as(self, other: Provenance) -> list[str]:
        """What differs between the two in a way that changes ids or labels (empty: nothing)."""
        names = ("tokenizer", "template", "train_on", "max_length", "reasoning")
        return [name for name in names if getattr(self, name) != getattr(other, name)]


def provenance(
    tokenizer: Any,
    template: Template,
    train_on: str,
    max_length: int | None,
    tokenizer_name: str = "",
    reasoning: str = "text",
) -> Provenance:
    """The provenance of ids made by ``glmdata.masks`` with these settings."""
    definition = tokenizer.backend_tokenizer.to_str().encode()
    return Provenance(
        hashlib.sha256(definition).hexdigest(),
        hashlib.sha256(template.text.encode()).hexdigest(),
        train_on,
        max_length,
        tokenizer_name or str(getattr(tokenizer, "name_or_path", "")),
        template.origin,
        reasoning,
    )


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError(
            "tokenized datasets are Parquet files and need pyarrow: pip install 'glmdata[parquet]'"
        ) from None
    return pyarrow


def _schema(made_with: Provenance) -> Any:
    pa = _pyarrow()
    fields = [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("assistant_masks", pa.list_(pa.int8())),
        ("row", pa.int64()),
    ]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(asdict(made_with)).encode()})


def write(stream: IO[bytes], batches: Iterable[Mapping[str, Sequence[Any]]], made_with: Provenance) -> None:
    """Write ``batches`` (each a mapping of the four ``COLUMNS`` to lists) to ``stream`` as one
    Parquet file, a row group per batch: memory stays that of one batch."""
    pa = _pyarrow()
    schema = _schema(made_with)
    with pa.parquet.ParquetWriter(stream, schema) as writer:
        for batch in batches:
            columns = [
                _lists(pa, batch[name], code)
                for name, code in (("input_ids", "i"), ("labels", "i"), ("assistant_masks", "b"))
            ]
            writer.write_table(pa.Table.from_arrays([*columns, pa.array(batch["row"], pa.int64())], schema=schema))


def _lists(pa: Any, lists: Sequence[Sequence[int]], code: str) -> Any:
    """A list column built from flat buffers: pyarrow converts Python lists of ints at about 1 us an
    int, the ``array`` module's buffers at a tenth of that."""
    values = array(code, chain.from_iterable(lists))
    offsets = array("i", [0, *accumulate(map(len, lists))])
    kind = pa.int32() if code == "i" else pa.int8()
    flat = pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)]), flat
    )


def read_provenance(path: str | os.PathLike) -> Provenance | None:
    """The provenance in a Parquet file's metadata; ``None`` when it has none (not made by glmdata)."""
    pa = _pyarrow()
    metadata = pa.parquet.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        return None
    return Provenance(**json.loads(metadata[METADATA_KEY]))


def check(path: str | os.PathLike, expected: Provenance) -> None:
    """Raise ``ValueError`` unless the tokenized file at ``path`` was made as ``expected`` says."""
    found = read_provenance(path)
    if found is None:
        raise ValueError(
            f"{path} is a Parquet file without glmdata's metadata ({METADATA_KEY.decode()}); make it with "
            "`glmdata tokenize DATA --tokenizer DIR -o FILE.parquet`, or train on the messages JSONL"
        )
    differs = found.same_tokens_as(expected)
    if differs:
        said = "; ".join(
            f"{name}: the file has {_shown(found, name)}, this run {_shown(expected, name)}" for name in differs
        )
        raise ValueError(
            f"{path} was tokenized differently ({said}); tokenize again with this run's settings "
            "(`glmdata tokenize DATA --tokenizer DIR -o FILE.parquet`), or train on the messages JSONL"
        )


def _shown(made_with: Provenance, name: str) -> str:
    value = getattr(made_with, name)
    if name in ("tokenizer", "template"):
        origin = getattr(made_with, f"{name}_name")
        return f"{value[:12]}" + (f" ({origin})" if origin else "")
    return repr(value)
