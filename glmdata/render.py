"""Render GLM-4 ``messages`` rows with the GLM-4 chat template, and find the trained text.

Rendering is byte-identical to ``tokenizer.apply_chat_template(messages, tokenize=False)``:
templates run in one Jinja environment configured exactly as transformers configures its own
(sandboxed, ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, the ``{% generation %}`` tag, and
its ``tojson`` that keeps key order and non-ASCII text). Like ``apply_chat_template``, keys whose
value is ``None`` are dropped from each message before rendering.

The glm-4-9b-chat template (any system-prompt wording) also has a pure-Python renderer, used
automatically, that gives the same bytes several times faster; it falls back to Jinja for any
value it does not handle itself. Tests hold both paths to transformers' output.

``render_spans`` returns the training text and the character spans that are trained, with the
semantics of the official GLM-4 finetune demo (``finetune.py``, ``process_batch``): see its
docstring. ``glmdata.masks`` turns the spans into token labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from json.encoder import encode_basestring as _encode_string
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

__all__ = [
    "DEFAULT_TEMPLATE",
    "END_OF_CHAT",
    "GENERATION_TEMPLATE",
    "NothingToTrain",
    "Rendered",
    "Template",
    "TemplateError",
    "TrainOn",
    "install_template",
    "load_template",
    "render",
    "render_spans",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
#: Name of the packaged default template: glm-4-9b-chat's official ("ChatGLM") template.
DEFAULT_TEMPLATE = "glm-4-9b-chat"
#: Name of the packaged training variant: same bytes, plus ``{% generation %}`` markers.
GENERATION_TEMPLATE = "glm-4-9b-chat.generation"
#: Appended after the conversation in training text: the official demo's "EOS for chat" (151336).
END_OF_CHAT = "<|user|>"

TrainOn = Literal["assistant", "all", "last"]
TRAIN_ON: tuple[str, ...] = ("assistant", "all", "last")

# A GLM-4 role tag, as written at the start of every rendered message.
_ROLE_TAG = re.compile(r"<\|[^|<>]*\|>")
# The system-prompt line of the glm-4-9b-chat tools block; variants differ only in this line
# (v1 "名为 ChatGLM 的", v2 / glm-4-9b-chat-1m "名为 GLM-4 的", edited copies in the wild).
_TOOLS_PROMPT = re.compile(r"[^\n{}%#]*(?=\n\n# 可用工具)")


class TemplateError(ValueError):
    """No usable chat template was found, or a template failed to compile or render."""


class NothingToTrain(ValueError):
    """A row renders no trained text (e.g. no assistant message with content)."""


class Rendered(NamedTuple):
    """Training text and the character spans of it that are trained.

    ``text`` is the rendered conversation followed by ``END_OF_CHAT`` (``<|user|>``), exactly the
    token sequence the official demo trains on. ``spans`` are sorted, non-overlapping, half-open
    ``(start, end)`` character ranges; adjacent spans are not merged (one per trained turn).
    """

    text: str
    spans: list[tuple[int, int]]


@dataclass(frozen=True)
class Template:
    """A chat template: its Jinja text and where it came from (for error messages)."""

    text: str
    origin: str = "<string>"

    @cached_property
    def has_generation_markers(self) -> bool:
        """Whether the template marks trained text with ``{% generation %}`` blocks."""
        return re.search(r"\{%-?\s*generation\s*-?%\}", self.text) is not None

    @cached_property
    def _fast(self) -> _FastGLM4 | None:
        return _fast_renderer(self.text)

    def __repr__(self) -> str:
        return f"Template(origin={self.origin!r}, {len(self.text)} chars)"


# --- loading ---------------------------------------------------------------------------------


def load_template(source: str | Path | Template | None = None) -> Template:
    """Load a chat template.

    ``source`` may be:
    - ``None``: the packaged default, glm-4-9b-chat's official template (``DEFAULT_TEMPLATE``);
    - the name of a packaged template (``"glm-4-9b-chat"``, ``"glm-4-9b-chat.generation"``);
    - a template file (``.jinja`` or any text file);
    - a ``tokenizer_config.json`` whose ``chat_template`` is a string or a list of
      ``{"name", "template"}`` (the ``default`` entry is used, or the only one);
    - a tokenizer directory: its ``chat_template.jinja``, else its ``tokenizer_config.json``
      (the precedence transformers uses);
    - a ``Template``, returned as is.

    Raises ``TemplateError`` saying what was looked for when nothing usable is found.
    """
    if isinstance(source, Template):
        return source
    if source is None:
        source = DEFAULT_TEMPLATE
    path = Path(source).expanduser()
    if not path.exists() and isinstance(source, str) and _is_packaged_name(source):
        return _packaged(source.removesuffix(".jinja"))
    if path.is_dir():
        return _from_directory(path)
    if path.is_file():
        if path.suffix == ".json":
            return _from_tokenizer_config(path)
        return Template(_read_text(path), str(path))
    packaged = ", ".join(sorted(p.name.removesuffix(".jinja") for p in TEMPLATES_DIR.glob("*.jinja")))
    raise TemplateError(
        f"no chat template at {str(source)!r}: no such file or directory; pass a .jinja file, "
        f"a tokenizer_config.json, a tokenizer directory, or a packaged template ({packaged})"
    )


def _is_packaged_name(name: str) -> bool:
    return "/" not in name and "\\" not in name and (TEMPLATES_DIR / f"{name.removesuffix('.jinja')}.jinja").is_file()


@cache
def _packaged(name: str) -> Template:
    path = TEMPLATES_DIR / f"{name}.jinja"
    return Template(_read_text(path), f"glmdata:{name}")


def _read_text(path: Path) -> str:
    try:
        # newline="" keeps the bytes: a template's line endings are part of its output.
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read chat template {path}: {e}") from e
    if not text.strip():
        raise TemplateError(f"chat template {path} is empty")
    return text


def _from_directory(path: Path) -> Template:
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        return Template(_read_text(jinja_file), str(jinja_file))
    config = path / "tokenizer_config.json"
    if config.is_file():
        return _from_tokenizer_config(config)
    raise TemplateError(
        f"no chat template in directory {path}: looked for chat_template.jinja and tokenizer_config.json; "
        "pass the tokenizer directory of the model, or a .jinja file"
    )


def _from_tokenizer_config(path: Path) -> Template:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise TemplateError(f"cannot read {path}: {e}") from e
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, str) and template.strip():
        return Template(template, f"{path}:chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" in named:
            choice = "default"
        elif len(named) == 1:
            choice = next(iter(named))
        else:
            raise TemplateError(
                f"{path} has several chat templates ({', '.join(map(str, named))}) and none named 'default'; "
                "save the one you want as a .jinja file and pass that"
            )
        if isinstance(named[choice], str) and named[choice].strip():
            return Template(named[choice], f"{path}:chat_template[{choice}]")
    raise TemplateError(f"{path} has no chat_template; pass a .jinja file or a directory with chat_template.jinja")


def install_template(
    tokenizer_dir: str | Path, *, training: bool = True, template: str | Path | Template | None = None
) -> Path:
    """Write a chat template into a tokenizer directory, the way transformers saves one.

    Writes ``chat_template.jinja`` (which transformers loads in preference to
    ``tokenizer_config.json``). If ``tokenizer_config.json`` also carries a ``chat_template``, that
    copy is replaced by the same text, so older loaders see the same template; otherwise the
    config is left untouched. ``template`` defaults to the packaged training variant
    (``training=True``, with ``{% generation %}`` markers, for ``return_assistant_tokens_mask`` /
    TRL ``assistant_only_loss``) or the plain official template (``training=False``). Both render
    the same bytes, so a model trained with one is served correctly by the other. Returns the
    path of ``chat_template.jinja``.
    """
    directory = Path(tokenizer_dir).expanduser()
    if not directory.is_dir():
        raise TemplateError(f"cannot install chat template: {directory} is not a directory")
    if template is None:
        template = GENERATION_TEMPLATE if training else DEFAULT_TEMPLATE
    text = load_template(template).text
    target = directory / "chat_template.jinja"
    with open(target, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        old = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(old, str):
            config["chat_template"] = text
        elif isinstance(old, list):
            config["chat_template"] = [
                {**t, "template": text} if isinstance(t, dict) and t.get("name") == "default" else t for t in old
            ]
        if old is not None:
            with open(config_path, "w", encoding="utf-8") as f:
                f.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return target


# --- the Jinja environment -------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Any:
    """The one Jinja environment, built like transformers' ``_compile_jinja_template`` builds its own."""
    from contextlib import contextmanager
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(Extension):
        # transformers' `{% generation %}` tag: renders its body, and records its character
        # span while a tracker is active.
        tags = {"generation"}

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            environment.extend(activate_tracker=self.activate_tracker)
            self._rendered_blocks: list[str] | None = None
            self._generation_indices: list[tuple[int, int]] | None = None

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context: Any, caller: Any) -> str:
            rv = caller()
            if self._rendered_blocks is not None and self._generation_indices is not None:
                start = len("".join(self._rendered_blocks))
                self._generation_indices.append((start, start + len(rv)))
            return rv

        @contextmanager
        def activate_tracker(self, rendered_blocks: list[str], generation_indices: list[tuple[int, int]]) -> Any:
            try:
                if self._rendered_blocks is not None:
                    raise ValueError("AssistantTracker should not be reused before closed")
                self._rendered_blocks = rendered_blocks
                self._generation_indices = generation_indices
                yield
            finally:
                self._rendered_blocks = None
                self._generation_indices = None

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        # transformers' tojson: Jinja's own escapes HTML and non-ASCII and sorts keys.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        # dict() without attribute access to the real type, as in transformers' sandbox.
        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        # Namespaces that refuse underscore attributes, as in transformers' sandbox.
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
                )

    class Sandbox(ImmutableSandboxedEnvironment):
        # transformers' sandbox, stricter only for templates that attack it, so that they fail
        # loudly instead of rendering an empty string where the sandbox refused:
        # - an unsafe attribute (``''.__class__``, ``self._TemplateReference__context``,
        #   ``lipsum.__globals__``, ``'{0.__class__}'.format(x)``) raises SecurityError;
        # - include/import/extends read no file (``{% include '/etc/passwd' %}``);
        # - ``*`` and ``**`` refuse results that would exhaust memory or time.
        intercepted_binops = frozenset({"*", "**"})

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise jinja2.exceptions.SecurityError(
                f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
            )

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

    class NoFiles(jinja2.BaseLoader):
        def get_source(self, environment: Any, template: str) -> Any:
            raise jinja2.exceptions.TemplateNotFound(
                template, f"chat templates cannot read other files (refused: {template!r})"
            )

    env = Sandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols], loader=NoFiles()
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env


#: Largest string or list a template may build with ``*`` (characters or items).
MAX_TEMPLATE_SEQUENCE = 10_000_000


def _check_binop(operator: str, left: Any, right: Any) -> None:
    from jinja2.exceptions import SecurityError

    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_TEMPLATE_SEQUENCE:
                raise SecurityError(f"the template builds a sequence of {len(seq) * n:,} items with '*' (limit {MAX_TEMPLATE_SEQUENCE:,})")
    elif isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if (abs(left).bit_length() - 1) * right > 1_000_000:
            raise SecurityError("the template computes a number of more than a million bits with '**'")


@lru_cache(maxsize=64)
def _compile(text: str) -> Any:
    import jinja2

    try:
        return _environment().from_string(text)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: line {e.lineno}: {e.message}") from e
    except Exception as e:  # noqa: BLE001 - e.g. RecursionError on absurdly nested text
        raise TemplateError(f"chat template does not compile: {type(e).__name__}: {e}") from e


def _jinja_render(template: Template, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
    import jinja2

    # apply_chat_template drops None-valued keys: a template then sees the key as undefined.
    chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
    try:
        return _compile(template.text).render(
            messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as e:
        raise TemplateError(f"{template.origin}: {e}") from e
    except jinja2.exceptions.TemplateError as e:
        raise TemplateError(f"{template.origin}: rendering failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - the template's own code failed: 1/0, '{0:%s}'.format(1), ...
        raise TemplateError(f"{template.origin}: rendering failed: {type(e).__name__}: {e}") from e


# --- the fast glm-4-9b-chat renderer ---------------------------------------------------------


class _Fallback(Exception):
    """A value the fast renderer leaves to Jinja (unusual types); never escapes this module."""


class _FastGLM4:
    """Pure-Python rendering of the glm-4-9b-chat template, piece by piece.

    Built from a template whose text matches glm-4-9b-chat's apart from the system-prompt line.
    Every constant is taken from Jinja's own rendering of probe conversations, and the renderer
    is only used if it reproduces Jinja on a probe that takes every branch of the template.
    """

    _BUILTIN_TYPES = ("python", "simple_browser", "cogview")
    _CACHE_LIMIT = 4096

    def __init__(self, template: Template) -> None:
        system = {"role": "system", "content": ""}
        self.prefix = _jinja_render(template, [], False)
        with_header = _jinja_render(template, [{**system, "tools": []}], False)
        self.tools_header = with_header[len(self.prefix) :]
        # A function tool renders as HEAD + name + MIDDLE + tojson(function, indent=4) + TAIL.
        probe_function = {"name": "probe_name"}
        block = _jinja_render(
            template, [{**system, "tools": [{"type": "function", "function": probe_function}]}], False
        )
        block = block[len(with_header) :]
        head, _, rest = block.partition(probe_function["name"])
        middle, _, tail = rest.partition(json.dumps(probe_function, ensure_ascii=False, indent=4))
        self.function_head, self.function_middle, self.function_tail = head, middle, tail
        self.builtin_blocks = {
            kind: _jinja_render(template, [{**system, "tools": [{"type": kind}]}], False)[len(with_header) :]
            for kind in self._BUILTIN_TYPES
        }
        # Tools blocks by JSON text of the tools list: datasets repeat the same declarations
        # across rows, and serializing them with indentation is the costliest part of a row.
        self._tools_cache: dict[str, str] = {}

    def pieces(self, messages: Sequence[Mapping[str, Any]]) -> list[str]:
        """The rendered text of each message, in order (``""`` for a message that renders nothing)."""
        out = []
        for m in messages:
            if type(m) is not dict:
                raise _Fallback
            piece = ""
            tools = m.get("tools")
            if tools is not None:
                piece = self._tools_block(tools)
            content = m.get("content")
            if content:
                role = m.get("role")
                metadata = m.get("metadata")
                if (
                    type(content) is not str
                    or (role is not None and type(role) is not str)
                    or (metadata is not None and type(metadata) is not str)
                ):
                    raise _Fallback
                piece += "<|" + (role or "") + "|>" + (metadata or "") + "\n" + content
            out.append(piece)
        return out

    def _tools_block(self, tools: Any) -> str:
        if type(tools) is not list:
            raise _Fallback
        key = _tools_key(tools)
        block = self._tools_cache.get(key)
        if block is None:
            block = self.tools_header + "".join(self._tool_block(tool) for tool in tools)
            if len(self._tools_cache) >= self._CACHE_LIMIT:
                self._tools_cache.clear()
            self._tools_cache[key] = block
        return block

    def _tool_block(self, tool: Any) -> str:
        if type(tool) is not dict:
            raise _Fallback
        kind = tool.get("type")
        if type(kind) is not str:
            raise _Fallback
        if kind == "function":
            function = tool.get("function")
            if type(function) is not dict:
                raise _Fallback
            name = function.get("name", "")
            if type(name) is not str:
                raise _Fallback
            body = _tojson_indent4(function)
            return self.function_head + name + self.function_middle + body + self.function_tail
        # Any other tool type renders nothing in the official template.
        return self.builtin_blocks.get(kind, "")


def _tools_key(tools: list) -> bytes | str:
    """The tools cache key: orjson's text (about twice as fast as json's), unless it holds
    ``null``, which is also what orjson writes for NaN and infinities (rendered differently):
    then json's text. The two kinds of key are different types, so they never collide."""
    try:
        key = orjson.dumps(tools)
    except TypeError:  # integers beyond 64 bits, keys that are not strings
        key = b"null"
    if b"null" not in key:
        return key
    try:
        return json.dumps(tools)
    except (TypeError, ValueError):
        raise _Fallback from None


_INDENTS = ["\n" + "    " * level for level in range(64)]


def _tojson_indent4(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, indent=4)`` (transformers' ``tojson(indent=4)``).

    json's indented output runs its pure-Python encoder; this builds the same text several times
    faster for plain JSON values (exact types), and defers to json for anything else.
    """
    try:
        return _indented(value, 0)
    except (_Fallback, RecursionError, IndexError):  # IndexError: nested deeper than _INDENTS
        return json.dumps(value, ensure_ascii=False, indent=4)


def _indented(value: Any, level: int) -> str:
    # Mirrors json.encoder._make_iterencode with indent=4, item separator "," and key separator
    # ": ", for exact JSON types; json's own C string encoder escapes strings.
    kind = type(value)
    if kind is str:
        return _encode_string(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = _INDENTS[level + 1]
        items = []
        for key, item in value.items():
            if type(key) is not str:
                raise _Fallback
            items.append(_encode_string(key) + ": " + _indented(item, level + 1))
        return "{" + inner + ("," + inner).join(items) + _INDENTS[level] + "}"
    if kind is list or kind is tuple:
        if not value:
            return "[]"
        inner = _INDENTS[level + 1]
        return "[" + inner + ("," + inner).join([_indented(item, level + 1) for item in value]) + _INDENTS[level] + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return float.__repr__(value)
    raise _Fallback


def _skeleton(text: str) -> str:
    return _TOOLS_PROMPT.sub("", text, count=1)


@lru_cache(maxsize=1)
def _fast_skeletons() -> frozenset[str]:
    return frozenset(_skeleton(_packaged(name).text) for name in (DEFAULT_TEMPLATE, GENERATION_TEMPLATE))


_PROBE = [
    {
        "role": "system",
        "content": "系统 prompt",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_天气",
                    "description": "d é",
                    "parameters": {"b": [1, 2.5, None, True], "a": {}},
                },
            },
            {"type": "python"},
            {"type": "simple_browser"},
            {"type": "cogview"},
            {"type": "other"},
            {"type": "function", "function": {"description": "no name"}},
        ],
    },
    {"role": "user", "content": "hi\n<b>&amp;</b>"},
    {"role": "assistant", "metadata": "get_天气", "content": '{"city": "北京"}'},
    {"role": "observation", "content": '{"t": 20}'},
    {"role": "assistant", "content": ""},
    {"role": "assistant", "metadata": None, "content": "done", "loss": False},
    {"role": "user", "content": "bye", "tools": []},
]


@lru_cache(maxsize=16)
def _fast_renderer(text: str) -> _FastGLM4 | None:
    if _skeleton(text) not in _fast_skeletons():
        return None
    template = Template(text, "probe")
    fast = _FastGLM4(template)
    expected = _jinja_render(template, _PROBE, True)
    if fast.prefix + "".join(fast.pieces(_PROBE)) + "<|assistant|>" != expected:
        return None  # pragma: no cover - a safety net; the tests show the probe agrees
    return fast


# --- rendering -------------------------------------------------------------------------------


def _resolve(template: str | Path | Template | None) -> Template:
    if template is None:
        return _packaged(DEFAULT_TEMPLATE)
    return load_template(template)


def _pieces(messages: Sequence[Mapping[str, Any]], template: Template) -> tuple[str, list[str]]:
    """The text before the first message, and the text of each message, for ``template``."""
    fast = template._fast
    if fast is not None:
        try:
            return fast.prefix, fast.pieces(messages)
        except _Fallback:
            pass
    prefix = _jinja_render(template, [], False)
    pieces = []
    for m in messages:
        alone = _jinja_render(template, [m], False)
        if not alone.startswith(prefix):
            raise _not_separable(template)
        pieces.append(alone[len(prefix) :])
    if prefix + "".join(pieces) != _jinja_render(template, messages, False):
        raise _not_separable(template)
    return prefix, pieces


def _not_separable(template: Template) -> TemplateError:
    return TemplateError(
        f"{template.origin}: cannot locate turns: rendering the messages one at a time does not "
        "reproduce the whole conversation, so trained spans cannot be found with this template"
    )


def render(
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    template: str | Path | Template | None = None,
) -> str:
    """Render a conversation as text.

    Byte-identical to ``tokenizer.apply_chat_template(messages, tokenize=False,
    add_generation_prompt=...)`` with the same template (default: glm-4-9b-chat's official
    template). ``template`` is anything ``load_template`` accepts. Raises ``TemplateError`` if a
    custom template fails to render.
    """
    template = _resolve(template)
    fast = template._fast
    if fast is not None:
        try:
            text = fast.prefix + "".join(fast.pieces(messages))
        except _Fallback:
            pass
        else:
            return text + "<|assistant|>" if add_generation_prompt else text
    return _jinja_render(template, messages, add_generation_prompt)


def render_spans(
    messages: Sequence[Mapping[str, Any]],
    *,
    train_on: TrainOn = "assistant",
    template: str | Path | Template | None = None,
) -> Rendered:
    """Render a conversation for training, with the character spans that are trained.

    ``text`` is ``render(messages)`` followed by ``<|user|>``, as the official GLM-4 finetune demo
    builds its input (it appends ``<|user|>``, id 151336, as "EOS for chat").

    ``train_on``:
    - ``"assistant"`` (the demo's per-message mode, ``combine: False``): for each trained
      message, everything after its opening role tag (the metadata line of a native tool call,
      the newline, the content) plus the role tag that ends the turn (the next message's tag,
      or the appended ``<|user|>``). GLM-4 has no end-of-turn token: the next tag is what the
      model learns to stop on. Assistant messages are trained; system, user and observation
      messages are not. A message's ``loss`` (ChatGLM3's convention) overrides that: ``True``
      trains any message the same way, ``False`` leaves an assistant message out.
    - ``"last"``: only the final assistant message that renders (the demo's ``combine: True``, the
      default of its lora.yaml, which silently trains one turn per conversation),
      spanned as above; ``loss`` flags are ignored. Unlike the demo, the first token after the
      last ``<|assistant|>`` is trained: the demo shifts its combine-mode mask twice and loses it.
    - ``"all"``: every character, ``[gMASK]<sop>`` included, which is what plain-text SFT of the
      rendered text trains (the tool-call tutorial's pipeline): as labels are shifted inside the
      model, the first token is never predicted and ``<sop>`` is predicted from ``[gMASK]``.

    Messages that render nothing (empty content, no tools) are skipped: the turn before them ends
    at the next tag that is rendered. Raises ``NothingToTrain`` when no span results, and
    ``TemplateError`` for a custom template whose messages cannot be located (it must render as
    a fixed prefix followed by each message rendered alone, each starting with a role tag).
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}; got {train_on!r}")
    template = _resolve(template)
    prefix, pieces = _pieces(messages, template)
    if messages and not prefix and not any(pieces):
        # e.g. a template of undefined names only ({{ config }}): nothing to locate, nothing to train
        raise TemplateError(f"{template.origin}: renders nothing for these {len(messages)} messages: is it a chat template?")
    text = prefix + "".join(pieces) + END_OF_CHAT
    if train_on == "all":
        return Rendered(text, [(0, len(text))])

    # (message, start offset, length of its opening tag) for each message that renders.
    turns = []
    position = len(prefix)
    for message, piece in zip(messages, pieces):
        if piece:
            tag = _ROLE_TAG.match(piece)
            if tag is None:
                raise TemplateError(
                    f"{template.origin}: a rendered message does not start with a role tag: {piece[:40]!r}"
                )
            turns.append((message, position, tag.end()))
            position += len(piece)
    ends = [start + tag_len for _, start, tag_len in turns[1:]] + [len(text)]

    if train_on == "last":
        trained = [i for i, (m, _, _) in enumerate(turns) if m.get("role") == "assistant"][-1:]
    else:
        trained = [i for i, (m, _, _) in enumerate(turns) if _is_trained(m)]
    if not trained:
        raise NothingToTrain(_nothing_to_train_message(train_on))
    spans = [(turns[i][1] + turns[i][2], ends[i]) for i in trained]
    return Rendered(text, spans)


def _is_trained(message: Mapping[str, Any]) -> bool:
    loss = message.get("loss")
    if loss is not None:
        return bool(loss)
    return message.get("role") == "assistant"


def _nothing_to_train_message(train_on: str) -> str:
    if train_on == "last":
        return "nothing to train: no assistant message with content (train_on='last')"
    return "nothing to train: no assistant message with content, and no message with loss=true (train_on='assistant')"
