"""What can be wrong with a row: stable codes, their severity, and the hint that tells how to fix it.

An :class:`Issue` is ``(code, severity, path, message, hint)``; codes are stable strings that users
filter on and tests assert on. Every code the project can emit is listed in :data:`CODES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

Severity = Literal["error", "warning"]

# code -> (severity, hint). The hint says how to fix the data; the message (per issue) says what.
CODES: dict[str, tuple[Severity, str]] = {
    # reading
    "invalid-json": ("error", "fix the JSON syntax on that line (a JSONL file holds one JSON object per line)"),
    "invalid-utf8": ("error", "re-encode the file as UTF-8"),
    "not-an-object": ("error", "each row must be a JSON object; wrap or drop this value"),
    "unknown-format": ("error", "pass --from FORMAT, or reshape the row to one of the known formats"),
    "truncated-input": ("error", "the file ends in the middle of a value: re-export or re-download it"),
    # schema of the source format
    "schema": ("error", "give the field the type the format expects (see `glmdata schema`)"),
    "unknown-role": ("error", "use one of system/user/assistant/observation (or a known alias such as human/gpt)"),
    "tools-not-list": ("error", 'give tools as a list of {"type": "function", "function": {...}} objects'),
    "tools-invalid-json": ("error", "the tools string is not valid JSON: fix it or remove the tools field"),
    "bad-tool": ("error", 'write each tool as {"type": "function", "function": {"name", "description", "parameters"}}'),
    "bad-call": ("error", 'write a call as {"name": ..., "arguments": {...}}'),
    "unmatched-tool-result": (
        "error",
        "set the result's tool_call_id to the id of the call it answers, in the assistant message right before it",
    ),
    "disabled-repair": ("error", "enable the repair (drop --no-repair) or fix the data by hand"),
    "misplaced-reasoning": ("error", "give reasoning only to assistant messages (the turn that reasons), or remove it"),
    "bad-reasoning": (
        "error",
        "write the reasoning once, in the message's reasoning field or as <think>...</think> at the start of its "
        "content, with no <think> or </think> inside it",
    ),
    "reasoning-without-slot": (
        "error",
        "the chosen template has no reasoning slot: pass --reasoning text (into the content) or --reasoning drop, "
        "or a --template with reasoning (glm-4.5, glm-4.6)",
    ),
    # checks on the converted conversation (errors)
    "empty-content": ("error", "give the message text or remove it; the GLM-4 template silently drops empty messages"),
    "no-assistant": ("error", "add an assistant reply; a row with nothing to learn from trains nothing"),
    "observation-without-call": (
        "error",
        "put the call in a function_call/tool-call turn before the observation, or drop the row",
    ),
    "undeclared-tool": ("error", "declare the tool in the row's tools, or fix the tool name in the call"),
    "arguments-not-object": ("error", 'call arguments must be a JSON object such as {"city": "Beijing"}'),
    "invalid-tool-schema": ("error", "make the tool's parameters a valid JSON Schema object"),
    "duplicate-tool-name": (
        "error",
        "declare each tool name once: merge the declarations or rename one (the template renders both)",
    ),
    "special-token": ("error", "remove GLM-4 special tokens from the text; they would inject fake turns"),
    "call-roundtrip": ("error", "a tool name must be one line with no spaces around it, followed by JSON arguments"),
    # warnings (row kept, counted; --strict rejects)
    "missing-argument": ("warning", "add the required argument to the call, or drop it from the tool's required list"),
    "unknown-argument": ("warning", "remove the argument from the call, or declare it in the tool's parameters"),
    "argument-type": ("warning", "give the argument the type the tool's schema declares"),
    "call-without-observation": ("warning", "add the tool's result as an observation after the call"),
    "not-ending-assistant": ("warning", "end the conversation with an assistant turn; trailing turns are not trained"),
    "system-position": ("warning", "keep one system message, first"),
    "placeholder": ("warning", "fill the template placeholders (e.g. {{name}}) before training"),
    "duplicate": ("warning", "pass --dedupe to drop exact duplicate rows"),
    "inferred-schema": ("warning", "write the tool's real JSON Schema; types were guessed from example values"),
    "oversized-content": ("warning", "check the text: it is far longer than a chat turn usually is"),
    "whitespace-content": ("warning", "collapse the padding; whitespace costs tokens and teaches nothing"),
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding about one row: where (``path``), what (``message``), and how to fix it (``hint``)."""

    code: str
    path: str
    message: str

    @property
    def severity(self) -> Severity:
        return CODES[self.code][0]

    @property
    def hint(self) -> str:
        return CODES[self.code][1]

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class RowError(Exception):
    """Raised while converting a row that cannot be kept; carries the issues that reject it."""

    def __init__(self, *issues: Issue):
        super().__init__("; ".join(f"{i.path}: {i.message}" for i in issues))
        self.issues = list(issues)


def reject(code: str, path: str, message: str) -> RowError:
    """Build the exception that rejects the current row with one issue."""
    if CODES[code][0] != "error":  # pragma: no cover - programming error
        raise ValueError(f"{code} is not an error code")
    return RowError(Issue(code, path, message))


def validate(adapter: TypeAdapter, value: Any, prefix: str = "") -> Any:
    """Validate with a prebuilt adapter; schema errors reject the row with their field paths."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise RowError(*(_schema_issue(err, prefix) for err in exc.errors(include_url=False)[:10])) from None


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "none"})


def _schema_issue(err: Any, prefix: str) -> Issue:
    path = prefix
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif (
            not isinstance(part, str)
            or "[" in part
            or part.startswith("function-")
            or part in _UNION_TAGS
            or part[:1].isupper()
        ):
            continue  # union / validator branch names (str, list[any], a model's class name), not field names
        else:
            path += f".{part}" if path else part
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r:.60})"
    return Issue("schema", path or "row", f"{err['msg']}{shown}")
