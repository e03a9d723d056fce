"""glmdata: turn chat and tool-call datasets into clean GLM-4 messages, with an exact account of every row.

The small public API behind the ``glmdata`` command::

    from glmdata import Options, convert_file, convert_rows, convert_batch, write_jsonl

The names load on first use, so that ``glmdata --help`` imports none of the conversion code; heavy
libraries (torch, transformers, datasets) are never imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Options": "glmdata.convert",
    "convert_batch": "glmdata.convert",
    "convert_file": "glmdata.convert",
    "convert_row": "glmdata.convert",
    "convert_rows": "glmdata.convert",
    "Report": "glmdata.report",
    "Result": "glmdata.result",
    "write_jsonl": "glmdata.io",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glmdata' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
