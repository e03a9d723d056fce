"""Input formats. Each module has the Pydantic model of its rows, ``detect(row)`` and ``to_messages``.

A new format is one new module registered in :data:`FORMATS`.
"""

from __future__ import annotations

from glmdata.formats import alpaca, chatglm3, llamafactory, messages, openai, sharegpt

# Order matters for detection: the first module whose detect() accepts a row wins.
FORMATS = {
    "messages": messages,
    "openai": openai,
    "llamafactory": llamafactory,
    "sharegpt": sharegpt,
    "chatglm3": chatglm3,
    "alpaca": alpaca,
}
ALIASES = {
    "glaive": "sharegpt",
    "glm4": "messages",
    "glm-4": "messages",
    "chatml": "openai",
    "llama-factory": "llamafactory",
    "lf": "llamafactory",
}
_MESSAGES_FORMATS = ("messages", "openai", "llamafactory")  # rows with a messages list, told apart below


def format_names() -> list[str]:
    return list(FORMATS)


def resolve(name: str) -> str:
    """Canonical format name for ``--from``; raises KeyError for unknown names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise KeyError(name)
    return key


def detect(row: dict) -> str | None:
    """Name of the format this row is written in, or None (also for a row that mixes two)."""
    if "messages" in row and isinstance(row["messages"], list):
        seen_openai, seen_glm, weak = openai.signals(row, every=False)
        if seen_openai:
            # metadata is the messages reader's alone; loss both read (glm-4.5 rows keep their flags)
            if any(path.endswith(".metadata") for path in seen_glm):
                return None
            # list content is an OpenAI signal; LLaMA-Factory's parts have a value, not a text
            return "llamafactory" if llamafactory.detect(row) else "openai"
        if sharegpt.detect(row):
            return "sharegpt"
        return "openai" if weak and not seen_glm else "messages"
    for name, module in FORMATS.items():
        if name not in _MESSAGES_FORMATS and module.detect(row):
            return name
    return None


def describe_unknown(row: dict) -> str:
    if isinstance(row.get("messages"), list) and (problem := openai.mixed(row)):
        return problem
    keys = ", ".join(sorted(map(str, row))) or "none"
    known = "; ".join(f"{name}: {module.SIGNATURE}" for name, module in FORMATS.items())
    return f"cannot tell the format from the keys seen ({keys}); known formats: {known}"
