"""ChatGLM3 rows: ``{"tools"?, "conversations": [{"role", "content", "loss"?} | tool turn]}`` and
plain ``{"prompt", "response", "history"?}`` rows.

As documented in ChatGLM3's finetune demo: a ``tool`` turn ``{"role": "tool", "name", "parameters",
"observation"}`` expands into an assistant call (trained by default) and an observation (not
trained); per-message ``loss`` flags say what is trained.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from glmdata.builder import MessagesBuilder
from glmdata.issues import validate
from glmdata.jsontext import dumps
from glmdata.repairs import Fixer, call_arguments, canonical_role, normalize_tools

SIGNATURE = '{"conversations": [{"role", "content", "loss"?} | {"role": "tool", "name", "parameters", "observation"}], "tools"?} or {"prompt", "response"}'


class ChatGLM3Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str
    loss: bool | None = None
    metadata: str | None = None


class ChatGLM3ToolTurn(BaseModel):
    """A tool use: expands into an assistant call and an observation."""

    model_config = ConfigDict(extra="ignore")

    role: str
    name: str = Field(min_length=1)
    parameters: dict[str, Any] | str = Field(default_factory=dict)
    observation: Any = None
    loss: bool | None = None


class ChatGLM3Row(BaseModel):
    """A ChatGLM3 ``conversations`` row."""

    model_config = ConfigDict(extra="ignore", title="ChatGLM3 conversations row")

    conversations: list[ChatGLM3ToolTurn | ChatGLM3Message] = Field(min_length=1)
    tools: list[Any] | str | None = None


class ChatGLM3PromptRow(BaseModel):
    """A ChatGLM3 plain ``prompt`` / ``response`` row."""

    model_config = ConfigDict(extra="ignore", title="ChatGLM3 prompt/response row")

    prompt: str
    response: str
    history: list[tuple[str, str]] = Field(default_factory=list)


ADAPTER = TypeAdapter(ChatGLM3Row)
PROMPT_ADAPTER = TypeAdapter(ChatGLM3PromptRow)
MODEL = ChatGLM3Row
MODELS = (ChatGLM3Row, ChatGLM3PromptRow)


def detect(row: dict) -> bool:
    turns = row.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        return True
    return "prompt" in row and "response" in row


def _is_tool_turn(turn: Any) -> bool:
    # `content: null` is kept by strip_nulls: a tool turn from an Arrow-merged file carries it
    return isinstance(turn, dict) and ("name" in turn or "parameters" in turn) and turn.get("content") is None


def to_messages(row: dict, fx: Fixer, builder: MessagesBuilder) -> None:
    if "conversations" not in row:
        data = validate(PROMPT_ADAPTER, row)
        for k, (user, assistant) in enumerate(data.history):
            builder.add("user", user)
            builder.add("assistant", assistant, path=f"history[{k}][1]")
        builder.add("user", data.prompt)
        builder.add("assistant", data.response, path="response")
        return
    turns = row["conversations"]
    builder.add_tools(normalize_tools(row.get("tools"), fx, "tools") if "tools" in row else None, "tools")
    if not isinstance(turns, list):
        validate(ADAPTER, row)  # raises the schema error with its path
    for i, turn in enumerate(turns):
        path = f"conversations[{i}]"
        if _is_tool_turn(turn):
            tool = validate(_TOOL_TURN, turn, path)
            fx.apply("function-call", path, "tool turn")
            arguments = call_arguments(tool.parameters, fx, f"{path}.parameters")
            builder.call(tool.name, arguments, loss=tool.loss)
            if tool.observation is not None:
                observation = tool.observation if isinstance(tool.observation, str) else dumps(tool.observation)
                builder.add("observation", observation)
            continue
        message = validate(_MESSAGE, turn, path)
        role = canonical_role(message.role, fx, f"{path}.role")
        if role == "function_call":
            fx.apply("function-call", path, "function_call turn")
            builder.call_from_text(message.content, f"{path}.content", loss=message.loss)
        else:
            builder.add(
                role, message.content, loss=message.loss, metadata=message.metadata or None, path=f"{path}.content"
            )


_MESSAGE = TypeAdapter(ChatGLM3Message)
_TOOL_TURN = TypeAdapter(ChatGLM3ToolTurn)
