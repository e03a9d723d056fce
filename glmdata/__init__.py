"""glmdata: turn chat and tool-call datasets into clean GLM-4 messages, with an exact account of every row.

The small public API behind the ``glmdata`` command::

    from glmdata import Options, convert_file, convert_rows, convert_batch, write_jsonl

Heavy libraries (torch, transformers, datasets) are never imported here.
"""

from glmdata.convert import Chunk, Options, Result, convert_batch, convert_chunks, convert_file, convert_row, convert_rows
from glmdata.io import write_jsonl
from glmdata.report import Report

__all__ = [
    "Chunk",
    "Options",
    "Report",
    "Result",
    "convert_batch",
    "convert_chunks",
    "convert_file",
    "convert_row",
    "convert_rows",
    "write_jsonl",
]
__version__ = "0.1.0"
