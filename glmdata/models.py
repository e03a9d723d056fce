"""The one internal representation: GLM-4 ``messages`` rows.

Every input format converts into this model; render, stats, validate and glmtrain only ever see it.
A row is ``{"messages": [Message, ...]}``. Tools live on the system message, as the GLM-4
finetune README requires, in the OpenAI ``{"type": "function", "function": {...}}`` shape that the
chat template renders. A native tool call is an assistant message whose ``metadata`` is the tool
name and whose ``content`` is the arguments as JSON (rendered ``<|assistant|>name\\n{...}``).
An assistant message may carry ``reasoning``: each template family renders it in its own way
(GLM-4.5's ``<think>`` block) or, without a slot for it, as the ``--reasoning`` choice says.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import NotRequired, TypedDict

Role = Literal["system", "user", "assistant", "observation"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "observation")
BUILTIN_TOOL_TYPES: tuple[str, ...] = ("python", "simple_browser", "cogview")


class Function(BaseModel):
    """A callable tool: its name, what it does, and a JSON Schema for its arguments."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class Tool(BaseModel):
    """A declared tool. ``function`` tools carry a schema; the built-in GLM-4 tools carry none."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function", "python", "simple_browser", "cogview"]
    function: Function | None = None


class Message(BaseModel):
    """One GLM-4 message."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str
    tools: list[Tool] | None = Field(default=None, description="only on the system message")
    metadata: str | None = Field(default=None, description="tool name of a native tool call")
    reasoning: str | None = Field(
        default=None,
        description="assistant only: the reasoning that comes before the content or call (GLM-4.5's <think> block)",
    )
    loss: bool | None = Field(default=None, description="train on this message or not (overrides the role default)")


class Conversation(BaseModel):
    """A GLM-4 ``messages`` row: the canonical output of ``glmdata convert``."""

    model_config = ConfigDict(extra="forbid", title="GLM-4 messages row")

    messages: list[Message] = Field(min_length=1)


CONVERSATION = TypeAdapter(Conversation)


# The same row as plain typed dicts: what the builder produces and checks, render, masks and
# stats take (validated once, at the edge; everything after trusts these shapes).


class FunctionDict(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]


class ToolDict(TypedDict):
    type: str
    function: NotRequired[FunctionDict]


class MessageDict(TypedDict):
    role: str
    content: str
    tools: NotRequired[list[ToolDict]]
    metadata: NotRequired[str]
    reasoning: NotRequired[str]
    loss: NotRequired[bool]


class MessagesRow(TypedDict):
    messages: list[MessageDict]
