"""``glmtrain chat``: a terminal chat with the trained adapter.

Prompts are rendered with the saved tokenizer's chat template, which is what any inference server
will use; a tool call the model writes (GLM-4's ``NAME\\n{arguments}``) is shown parsed, and the
tool's result can be typed back as an observation. Answers go to stdout, prompts to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from glmtrain.config import GlmtrainError


def load_tools(path: str | Path) -> list[dict[str, Any]]:
    """Tools from a JSON file: a list of ``{"type": "function", "function": {...}}`` (bare
    ``{"name", "description", "parameters"}`` objects are wrapped)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise GlmtrainError(f"cannot read tools file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise GlmtrainError(f"tools file {path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list):
        raise GlmtrainError(f"tools file {path}: expected a JSON list of tools")
    tools = []
    for i, tool in enumerate(data):
        if isinstance(tool, dict) and "type" in tool:
            tools.append(tool)
        elif isinstance(tool, dict) and "name" in tool:
            tools.append({"type": "function", "function": tool})
        else:
            raise GlmtrainError(
                f"tools file {path}: tool {i} is neither "
                '{"type": "function", "function": {...}} nor {"name", ...}'
            )
    return tools


class ChatSession:
    """A conversation with a model: keeps the history, generates, parses tool calls."""

    def __init__(self, model, tokenizer, *, tools=None, system: str | None = None, max_new_tokens: int = 512):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.start: list[dict[str, Any]] = []
        if tools or system:
            message: dict[str, Any] = {"role": "system", "content": system or ""}
            if tools:
                message["tools"] = tools
            self.start.append(message)
        self.history = list(self.start)

    def reset(self) -> None:
        self.history = list(self.start)

    def generate(self) -> str:
        """The model's next turn as text (after ``<|assistant|>``), rendered with the saved tokenizer's template."""
        from glmtrain.callbacks import generate_reply

        text = self.tokenizer.apply_chat_template(self.history, tokenize=False, add_generation_prompt=True)
        return generate_reply(self.model, self.tokenizer, text, max_new_tokens=self.max_new_tokens)

    def reply(self, user: str) -> tuple[str, dict[str, Any] | None]:
        """Add the user's message and generate. Returns the turn text and the parsed tool call, if it is one."""
        self.history.append({"role": "user", "content": user})
        return self.respond()

    def respond(self) -> tuple[str, dict[str, Any] | None]:
        from glmtrain.callbacks import parse_tool_call

        text = self.generate()
        call = parse_tool_call(text)
        if call is not None and call.get("arguments") is not None:
            self.history.append(
                {
                    "role": "assistant",
                    "metadata": call["name"],
                    "content": json.dumps(call["arguments"], ensure_ascii=False),
                }
            )
        else:
            call = None
            text = text.removeprefix("\n")
            self.history.append({"role": "assistant", "content": text})
        return text, call

    def observe(self, result: str) -> tuple[str, dict[str, Any] | None]:
        """Give the tool's result back and generate the next turn."""
        self.history.append({"role": "observation", "content": result})
        return self.respond()


def chat_loop(session: ChatSession, console, *, read: Callable[[], str], out: TextIO) -> None:
    """Read user lines until EOF or ``/exit``; ``/reset`` starts over. A tool call asks for its result."""
    console.print("[dim]chat with the trained adapter: /reset starts over, /exit (or Ctrl-D) quits[/]")
    while True:
        console.print("[bold green]user>[/] ", end="")
        try:
            line = read()
        except EOFError:
            return
        command = line.strip()
        if command in ("/exit", "/quit"):
            return
        if command == "/reset":
            session.reset()
            continue
        if not command:
            continue
        text, call = session.reply(line)
        while call is not None:
            out.write(f"[tool call] {call['name']} {json.dumps(call['arguments'], ensure_ascii=False)}\n")
            out.flush()
            console.print("[bold yellow]observation>[/] [dim](the tool's result; empty line to skip)[/] ", end="")
            try:
                result = read()
            except EOFError:
                return
            if not result.strip():
                break
            text, call = session.observe(result)
        else:  # the turn ended in an answer (no break: not left waiting for a tool result)
            out.write(text + "\n")
            out.flush()
