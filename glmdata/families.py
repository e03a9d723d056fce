"""Template families: for each official GLM template, how the one internal row becomes its input.

The internal row (``glmdata.models``) is GLM-4-9b-chat's ``messages`` shape: tools on the system
message, native calls (``metadata`` = tool name, ``content`` = arguments JSON), ``observation``
results, and an optional ``reasoning`` on assistant messages. Each family's official template reads
another shape through ``apply_chat_template``; ``template_input`` builds it, so that
``glmdata.render`` renders every family with its own ``.jinja`` file and nothing else:

- ``glm-4-9b-chat`` / ``glm-4-9b-chat-v2``: the row itself (tools on the system message);
- ``glm-4-0414``: the messages, tools moved to the ``tools`` variable, native calls kept;
- ``glm-4.5`` / ``glm-4.6``: OpenAI-style messages: the text and the calls of one assistant turn in
  one message (``content``, ``reasoning_content``, ``tool_calls`` with an arguments object),
  ``observation`` as role ``tool``, tools as the ``tools`` variable.

A family without a slot for reasoning keeps it as text (``reasoning_as_text``) or drops it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from glmdata import jsontext

if TYPE_CHECKING:
    from glmdata.models import MessagesRow
    from glmdata.render import Template

__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "REASONING",
    "Family",
    "Reasoning",
    "family_of",
    "reasoning_as_text",
    "template_input",
]

Reasoning = Literal["text", "drop"]
#: What ``template_input`` does with assistant reasoning: keep it (in the family's slot, or as text
#: where it has none), or drop it.
REASONING: tuple[str, ...] = ("text", "drop")


@dataclass(frozen=True)
class Family:
    """An official template family: its packaged template, the models that ship it, and the input
    shape its template reads."""

    name: str  #: "glm-4-9b-chat", "glm-4-9b-chat-v2", "glm-4-0414", "glm-4.5", "glm-4.6"
    template: str  #: packaged template name (``glmdata.render.load_template(template)``)
    training_template: str  #: its ``.generation`` variant: same bytes, ``{% generation %}`` markers
    models: tuple[str, ...]  #: models whose tokenizer carries this template
    tools: Literal["system", "variable"]  #: tools on the system message, or ``apply_chat_template(tools=...)``
    calls: Literal["metadata", "tool_calls"]  #: GLM-4 metadata calls, or OpenAI tool_calls with an arguments object
    results: Literal["observation", "tool"]  #: the role of a tool result
    reasoning: bool  #: has a slot for assistant reasoning (``<think>``)

    @property
    def end_of_chat(self) -> str:
        """The tag appended after the conversation in training text when its last turn ended
        with text: the official GLM-4 finetune demo's "EOS for chat", ``<|user|>``."""
        return "<|user|>"

    def end_tag(self, template_messages: Sequence[Mapping[str, Any]]) -> str:
        """The tag that ends the last turn of ``template_messages`` (the template's input): the
        model's stop token after it. ``<|observation|>`` after an OpenAI-style tool call (where
        GLM-4.5 stops to wait for the result), else ``<|user|>``; GLM-4 metadata families always
        ``<|user|>``, as the official GLM-4 finetune demo appends."""
        if self.calls == "tool_calls" and template_messages:
            last = template_messages[-1]
            if last.get("role") == "assistant" and last.get("tool_calls"):
                return "<|observation|>"
        return self.end_of_chat


_GLM4_CHAT_MODELS = ("THUDM/glm-4-9b-chat", "THUDM/glm-4-9b-chat-hf")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "glm-4-9b-chat",
            "glm-4-9b-chat",
            "glm-4-9b-chat.generation",
            _GLM4_CHAT_MODELS,
            "system",
            "metadata",
            "observation",
            False,
        ),
        Family(
            "glm-4-9b-chat-v2",
            "glm-4-9b-chat-v2",
            "glm-4-9b-chat-v2.generation",
            ("THUDM/glm-4-9b-chat (its tokenizer_config.json)", "THUDM/glm-4-9b-chat-1m"),
            "system",
            "metadata",
            "observation",
            False,
        ),
        Family(
            "glm-4-0414",
            "glm-4-0414",
            "glm-4-0414.generation",
            ("THUDM/GLM-4-9B-0414", "THUDM/GLM-4-32B-0414"),
            "variable",
            "metadata",
            "observation",
            False,
        ),
        Family(
            "glm-4.5",
            "glm-4.5",
            "glm-4.5.generation",
            ("zai-org/GLM-4.5", "zai-org/GLM-4.5-Air"),
            "variable",
            "tool_calls",
            "tool",
            True,
        ),
        Family(
            "glm-4.6",
            "glm-4.6",
            "glm-4.6.generation",
            ("zai-org/GLM-4.6",),
            "variable",
            "tool_calls",
            "tool",
            True,
        ),
    )
}
#: The shape of a custom (unknown) template's input: glm-4-9b-chat's, as before families existed.
DEFAULT_FAMILY = FAMILIES["glm-4-9b-chat"]


def family_of(template: str | Path | Template) -> Family | None:
    """The family of a template: a ``Template``, a family or packaged template name (its
    ``.generation`` variant too), or template text compared character for character with the
    packaged originals and training variants (as ``glmdata.render.known_template``). ``None`` for
    an unknown custom template, which gets the glm-4-9b-chat input shape."""
    if isinstance(template, Path):
        from glmdata.render import load_template

        return _family_of_text(load_template(template).text)
    if not isinstance(template, str):  # a Template
        return _family_of_text(template.text)
    name = template.removesuffix(".jinja").removesuffix(".generation")
    if name in FAMILIES:
        return FAMILIES[name]
    return _family_of_text(template)


@lru_cache(maxsize=64)
def _family_of_text(text: str) -> Family | None:
    from glmdata.render import known_template

    name = known_template(text)
    return None if name is None else FAMILIES.get(name)


def reasoning_as_text(reasoning: str, content: str) -> str:
    """Reasoning kept as text, for a family with no slot for it: ``<think>R</think>\\nC``, the
    layout GLM's reasoning models write (``<think>R</think>`` alone when there is no content)."""
    return f"<think>{reasoning}</think>\n{content}" if content else f"<think>{reasoning}</think>"


def template_input(
    row: MessagesRow | Mapping[str, Any], family: Family, *, reasoning: Reasoning = "text"
) -> dict[str, Any]:
    """The input ``family``'s template reads through ``apply_chat_template``: ``{"messages":
    [...]}``, plus ``"tools": [...]`` for a family that takes tools as a variable when the row
    declares any.

    - ``tools="system"`` (glm-4-9b-chat): the row's own messages (the same list when nothing
      changes), reasoning folded into the content (``reasoning_as_text``) or dropped.
    - ``tools="variable"``: the tools of every message, in order, become the ``tools`` variable; the
      ``tools`` keys go, and so does a system message that only carried them (empty content).
    - ``calls="tool_calls"`` (glm-4.5): an assistant turn's text and the calls right after it (native
      calls: ``metadata`` = name, ``content`` = arguments JSON) become one assistant message with
      ``content``, ``reasoning_content`` (the reasoning, with ``reasoning="text"``) and
      ``tool_calls`` ``[{"type": "function", "function": {"name", "arguments": {...}}}]``; a call
      with its own reasoning starts a new message; ``observation`` becomes role ``tool``. The
      rendered text never depends on ``loss`` flags: a turn whose parts' flags disagree is one
      message, trained as a whole when any part is trained. A call in the ``json`` call style (no metadata) stays text.

    ``loss`` flags are kept on the messages they belong to (templates ignore them; the training
    variants read them). Raises ``ValueError`` naming the message when a native call's arguments are
    not a JSON object.
    """
    if reasoning not in REASONING:
        raise ValueError(f"reasoning must be one of {', '.join(REASONING)}; got {reasoning!r}")
    messages: Sequence[Mapping[str, Any]] = row["messages"]
    if family.calls == "tool_calls":
        return _openai_input(messages, family, reasoning)
    for m in messages:
        if m.get("reasoning") is not None:
            messages = _fold_reasoning(messages, reasoning)
            break
    if family.tools == "system":
        return {"messages": messages}
    tools, kept = _tools_out(messages)
    return {"messages": kept, "tools": tools} if tools else {"messages": kept}


def _fold_reasoning(messages: Sequence[Mapping[str, Any]], reasoning: Reasoning) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for m in messages:
        text = m.get("reasoning")
        if text is None:
            out.append(m)
            continue
        m = {k: v for k, v in m.items() if k != "reasoning"}
        if reasoning == "text" and text:
            if m.get("metadata"):
                # A call's content is its arguments JSON: the reasoning goes in a turn before it.
                before = {"role": "assistant", "content": reasoning_as_text(text, "")}
                if m.get("loss") is not None:
                    before["loss"] = m["loss"]
                out.append(before)
            else:
                m["content"] = reasoning_as_text(text, m.get("content") or "")
        out.append(m)
    return out


def _tools_out(messages: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Mapping[str, Any]]]:
    tools: list[Any] = []
    kept: list[Mapping[str, Any]] = []
    for m in messages:
        if "tools" not in m:
            kept.append(m)
            continue
        if m["tools"] is not None:
            tools.extend(m["tools"])
        if m.get("role") == "system" and not m.get("content"):
            continue  # only there to carry the tools
        kept.append({k: v for k, v in m.items() if k != "tools"})
    return tools, kept


def _openai_input(messages: Sequence[Mapping[str, Any]], family: Family, reasoning: Reasoning) -> dict[str, Any]:
    tools: list[Any] = []
    out: list[dict[str, Any]] = []
    open_turn: dict[str, Any] | None = None  # the assistant message that calls may still join
    for index, m in enumerate(messages):
        role = m.get("role")
        if "tools" in m:
            tools.extend(m["tools"] or ())
            if role == "system" and not m.get("content"):
                continue  # only there to carry the tools
        if role != "assistant":
            open_turn = None
            message = {"role": family.results if role == "observation" else role, "content": m.get("content")}
            if m.get("loss") is not None:
                message["loss"] = m["loss"]
            out.append(message)
            continue
        thought = m.get("reasoning") if reasoning == "text" else None
        name = m.get("metadata")
        if name:
            call = {"type": "function", "function": {"name": name, "arguments": _arguments(m, name, index)}}
            if open_turn is not None and thought is None:
                open_turn.setdefault("tool_calls", []).append(call)
                if open_turn.get("loss") != m.get("loss"):  # one turn, trained as a whole
                    open_turn["loss"] = open_turn.get("loss") is not False or m.get("loss") is not False
                continue
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": m.get("content")}
        if thought is not None:
            message["reasoning_content"] = thought
        if m.get("loss") is not None:
            message["loss"] = m["loss"]
        out.append(message)
        open_turn = message
    return {"messages": out, "tools": tools} if tools else {"messages": out}


def _arguments(message: Mapping[str, Any], name: str, index: int) -> Any:
    content = message.get("content") or ""
    try:
        arguments = jsontext.loads(content) if content.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ValueError(
            f"messages[{index}]: the arguments of the call to {name!r} are not a JSON object "
            f"({content[:40]!r}); fix the call, or run the row through glmdata convert, which rejects it"
        )
    return arguments
