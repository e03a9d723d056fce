"""JSON Schemas of every supported format, generated from the Pydantic models into ``schemas/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from glmdata.formats.alpaca import AlpacaRow
from glmdata.formats.chatglm3 import ChatGLM3PromptRow, ChatGLM3Row
from glmdata.formats.llamafactory import LlamaFactoryRow
from glmdata.formats.openai import OpenAIRow
from glmdata.formats.sharegpt import ShareGPTRow
from glmdata.models import Conversation

SCHEMAS: dict[str, Any] = {  # models and TypedDicts
    "messages": Conversation,
    "sharegpt": ShareGPTRow,
    "alpaca": AlpacaRow,
    "chatglm3": ChatGLM3Row,
    "chatglm3-prompt": ChatGLM3PromptRow,
    "openai": OpenAIRow,
    "llamafactory": LlamaFactoryRow,
}


def schema_texts() -> dict[str, str]:
    """File name -> JSON Schema text, exactly as ``glmdata schema`` writes it."""
    texts = {}
    for name, model in SCHEMAS.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **TypeAdapter(model).json_schema(by_alias=True),
        }
        texts[f"{name}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return texts


def stale_files(directory: Path) -> list[str]:
    """Schema files in ``directory`` that are missing or differ from the models."""
    return [
        name
        for name, text in schema_texts().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
