"""Render GLM ``messages`` rows with the official chat templates, and find the trained text.

Rendering is byte-identical to ``tokenizer.apply_chat_template(messages, tools=tools,
tokenize=False)``, where ``messages`` and ``tools`` are what the template's family reads
(``glmdata.families.template_input`` of the row: the row itself for glm-4-9b-chat and custom
templates; tools as a variable for GLM-4-0414; OpenAI-style messages for GLM-4.5/4.6). Templates run
in one Jinja environment configured exactly as transformers configures its own (sandboxed,
``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, the ``{% generation %}`` tag, and its ``tojson``
that keeps key order and non-ASCII text). Like ``apply_chat_template``, keys whose value is ``None``
are dropped from each message before rendering. The ``.jinja`` file is the only implementation of a
template's semantics; the environment only takes shorter ways to the same results (the JSON text of
values written before, as tool declarations repeat across rows; keys looked up in plain dicts and
namespaces), each held by tests to transformers' or json's own.

``render_spans`` returns the training text and the character spans that are trained: for a known
template, its training variant's ``{% generation %}`` blocks (what transformers'
``return_assistant_tokens_mask`` reads), which for glm-4-9b-chat are the semantics of the official
GLM-4 finetune demo (``finetune.py``, ``process_batch``): see its docstring. ``glmdata.masks``
turns the spans into token labels.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from glmdata import families, jsontext
from glmdata.models import MessageDict

if TYPE_CHECKING:
    import jinja2

    from glmdata.families import Family, Reasoning

__all__ = [
    "DEFAULT_TEMPLATE",
    "END_OF_CHAT",
    "GENERATION_TEMPLATE",
    "KNOWN_TEMPLATES",
    "NothingToTrain",
    "Rendered",
    "Template",
    "TemplateError",
    "TrainOn",
    "install_template",
    "known_template",
    "load_template",
    "render",
    "render_spans",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
#: Name of the packaged default template: glm-4-9b-chat's official ("ChatGLM") template.
DEFAULT_TEMPLATE = "glm-4-9b-chat"
#: Name of the packaged training variant: same bytes, plus ``{% generation %}`` markers.
GENERATION_TEMPLATE = "glm-4-9b-chat.generation"
#: Official templates packaged by name, each with its training variant (same bytes, ``{% generation %}``
#: markers): v1 "名为 ChatGLM 的" (the default), v2 "名为 GLM-4 的" (glm-4-9b-chat's tokenizer_config.json).
#: GLM-4-0414 (glm-4-9b-0414, glm-4-32b-0414), GLM-4.5 (glm4_moe: GLM-4.5, GLM-4.5-Air) and GLM-4.6 read
#: another input shape: ``glmdata.families`` builds it.
KNOWN_TEMPLATES: dict[str, str] = {
    "glm-4-9b-chat": "glm-4-9b-chat.generation",
    "glm-4-9b-chat-v2": "glm-4-9b-chat-v2.generation",
    "glm-4-0414": "glm-4-0414.generation",
    "glm-4.5": "glm-4.5.generation",
    "glm-4.6": "glm-4.6.generation",
}
#: Appended after the conversation in training text: the official demo's "EOS for chat" (151336).
END_OF_CHAT = "<|user|>"

TrainOn = Literal["assistant", "all", "last"]
TRAIN_ON: tuple[str, ...] = ("assistant", "all", "last")

# A GLM-4 role tag, as written at the start of every rendered message.
_ROLE_TAG = re.compile(r"<\|[^|<>]*\|>")


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

    def __repr__(self) -> str:
        return f"Template(origin={self.origin!r}, {len(self.text)} chars)"


# --- loading ---------------------------------------------------------------------------------


def load_template(source: str | Path | Template | None = None) -> Template:
    """Load a chat template.

    ``source`` may be:
    - ``None``: the packaged default, glm-4-9b-chat's official template (``DEFAULT_TEMPLATE``);
    - the name of a packaged template (``"glm-4-9b-chat"``, ``"glm-4-9b-chat-v2"``, or either's
      training variant, the name with ``.generation``: see ``KNOWN_TEMPLATES``);
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


def known_template(template: str | Template) -> str | None:
    """The name of the official template whose exact text this is (or its training variant's text),
    compared character for character as TRL compares templates; ``None`` for any other text.
    ``KNOWN_TEMPLATES[name]`` names the training variant of a known template."""
    text = template.text if isinstance(template, Template) else template
    for name, training in KNOWN_TEMPLATES.items():
        if text in (_packaged(name).text, _packaged(training).text):
            return name
    return None


def _is_packaged_name(name: str) -> bool:
    return "/" not in name and "\\" not in name and (TEMPLATES_DIR / f"{name.removesuffix('.jinja')}.jinja").is_file()


@cache
def _packaged(name: str) -> Template:
    path = TEMPLATES_DIR / f"{name}.jinja"
    return Template(_read_text(path), f"glmdata:{name}")


def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")  # bytes as they are: line endings are part of the output
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
        config = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TemplateError(f"cannot read {path}: {e}") from e
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, str) and template.strip():
        return Template(template, f"{path}:chat_template")
    if isinstance(template, list):
        named: dict[Any, Any] = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" in named:
            choice = "default"
        elif len(named) == 1:
            choice = next(iter(named))
        else:
            raise TemplateError(
                f"{path} has several chat templates ({', '.join(map(str, named))}) and none named 'default'; "
                "save the one you want as a .jinja file and pass that"
            )
        text = named[choice]
        if isinstance(text, str) and text.strip():
            return Template(text, f"{path}:chat_template[{choice}]")
    raise TemplateError(f"{path} has no chat_template; pass a .jinja file or a directory with chat_template.jinja")


def install_template(
    tokenizer_dir: str | Path, *, training: bool = True, template: str | Path | Template | None = None
) -> Path:
    """Write a chat template into a tokenizer directory, the way transformers saves one.

    Writes ``chat_template.jinja`` (which transformers loads in preference to
    ``tokenizer_config.json``). If ``tokenizer_config.json`` also carries a ``chat_template``, that
    copy is replaced by the same text, so older loaders see the same template; otherwise the
    config is left untouched. ``template`` defaults to glm-4-9b-chat's (v1; pass
    ``"glm-4-9b-chat-v2"`` for v2); a known template (``known_template``) is written as its
    training variant (``training=True``, with ``{% generation %}`` markers, for
    ``return_assistant_tokens_mask`` / TRL ``assistant_only_loss``) or as the plain official
    template (``training=False``). Both render
    the same bytes, so a model trained with one is served correctly by the other. Returns the
    path of ``chat_template.jinja``.
    """
    directory = Path(tokenizer_dir).expanduser()
    if not directory.is_dir():
        raise TemplateError(f"cannot install chat template: {directory} is not a directory")
    text = load_template(DEFAULT_TEMPLATE if template is None else template).text
    name = known_template(text)  # a known template is written as the variant asked for
    if name is not None:
        text = load_template(KNOWN_TEMPLATES[name] if training else name).text
    target = directory / "chat_template.jinja"
    target.write_text(text, encoding="utf-8", newline="")
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = jsontext.loads(config_path.read_text(encoding="utf-8"))
        old = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(old, str):
            config["chat_template"] = text
        elif isinstance(old, list):
            config["chat_template"] = [
                {**t, "template": text} if isinstance(t, dict) and t.get("name") == "default" else t for t in old
            ]
        if old is not None:
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


# --- the Jinja environment -------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The one Jinja environment, built like transformers' ``_compile_jinja_template`` builds its own."""
    import builtins
    from datetime import datetime

    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        # transformers' `{% generation %}` tag (its AssistantTracker): renders its body as a call
        # block and, while a render is tracked (``_tracked_render``), records where the body is in
        # the output, as transformers does for ``return_assistant_tokens_mask``.
        tags = {"generation"}  # noqa: RUF012 - the name Jinja reads

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        def _generation_support(self, caller: Any) -> str:
            body = str(caller())
            tracker = _TRACKER.get()
            if tracker is not None:
                tracker.record(len(body))
            return body

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        # dict() without attribute access to the real type, as in transformers' sandbox.
        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
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

        def make_globals(self, d: Any) -> Any:
            # Jinja chains a template's globals over these and copies the chain at each render
            # (7 us of a row's 27). These are all set before any template compiles: a plain dict
            # holds the same names.
            return {**self.globals, **(d or {})}

        # Jinja looks for a key missing from a dict (a message without tools or metadata: most
        # messages) as a key and then as an attribute, through two exceptions: half of a row's
        # time. For a plain dict and a name that is no attribute of dict, both ways end here.
        def getitem(self, obj: Any, argument: Any) -> Any:
            if type(obj) is dict and type(argument) is str and argument not in _DICT_NAMES:
                value = obj.get(argument, _MISSING)
                return self.undefined(obj=obj, name=argument) if value is _MISSING else value
            return super().getitem(obj, argument)

        def getattr(self, obj: Any, attribute: str) -> Any:
            if type(obj) is dict and type(attribute) is str and attribute not in _DICT_NAMES:
                value = obj.get(attribute, _MISSING)
                return self.undefined(obj=obj, name=attribute) if value is _MISSING else value
            # A namespace's own names (``ns.flag``, read at every message of the training
            # templates): the sandbox's safety check always passes for them, at a third of a
            # row's time.
            if type(obj) is TemplateNamespace and type(attribute) is str and not attribute.startswith("_"):
                value = builtins.getattr(obj, attribute, _MISSING)
                return self.undefined(obj=obj, name=attribute) if value is _MISSING else value
            return super().getattr(obj, attribute)

    class NoFiles(jinja2.BaseLoader):
        def get_source(self, environment: Any, template: str) -> Any:
            raise jinja2.exceptions.TemplateNotFound(
                template, f"chat templates cannot read other files (refused: {template!r})"
            )

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols], loader=NoFiles())
    env.filters["tojson"] = _ToJSON()
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env


_DICT_NAMES = frozenset(dir(dict))
_MISSING = object()

#: Largest string or list a template may build with ``*`` (characters or items).
MAX_TEMPLATE_SEQUENCE = 10_000_000


def _check_binop(operator: str, left: Any, right: Any) -> None:
    from jinja2.exceptions import SecurityError

    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if (
                isinstance(seq, (str, bytes, list, tuple))
                and isinstance(n, int)
                and len(seq) * n > MAX_TEMPLATE_SEQUENCE
            ):
                raise SecurityError(
                    f"the template builds a sequence of {len(seq) * n:,} items with '*' "
                    f"(limit {MAX_TEMPLATE_SEQUENCE:,})"
                )
        return
    integers = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
    if integers and (abs(left).bit_length() - 1) * right > 1_000_000:
        raise SecurityError("the template computes a number of more than a million bits with '**'")


@lru_cache(maxsize=64)
def _compile(text: str) -> jinja2.Template:
    import jinja2

    try:
        return _environment().from_string(text)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not compile: line {e.lineno}: {e.message}") from e
    except Exception as e:  # e.g. RecursionError on absurdly nested text
        raise TemplateError(f"chat template does not compile: {type(e).__name__}: {e}") from e


# --- tojson ----------------------------------------------------------------------------------

# Exact JSON types only in a cache key: orjson refuses subclasses, dataclasses and dates with these.
_EXACT = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


class _ToJSON:
    """transformers' ``tojson`` (``json.dumps``, key order and non-ASCII text kept), remembering the
    text of values it wrote before: a tools block's ``tojson(indent=4)`` is the costliest part of a
    row (json indents in pure Python), and tool declarations repeat across rows.

    The key is orjson's text of the value, which keeps key order and tells ``1``, ``1.0``, ``true``
    and ``-0.0`` apart, for exact JSON types only. As orjson also writes NaN as ``null`` and enums,
    UUIDs and its ``Fragment`` (refused by json) as plain values, a text is reused only for a value
    equal to the one parsed back from its key. Integers beyond 64 bits, non-string keys and
    ``separators`` are left to ``json.dumps`` every time.
    """

    #: The cache starts over when its keys hold more than this many bytes (its entries take 3-10x that).
    MAX_BYTES = 2_000_000

    def __init__(self) -> None:
        self._texts: dict[tuple[bytes, int | None, bool, bool], tuple[Any, str]] = {}
        self._bytes = 0

    def __call__(
        self, x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        """``json.dumps(x, ensure_ascii=..., indent=..., separators=..., sort_keys=...)``."""
        plain_options = type(indent) in (int, type(None)) and type(ensure_ascii) is bool and type(sort_keys) is bool
        if separators is not None or not plain_options:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        try:
            data = orjson.dumps(x, option=_EXACT)
        except TypeError:  # orjson.JSONEncodeError: not exact JSON types, or an integer beyond 64 bits
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
        key = (data, indent, ensure_ascii, sort_keys)
        cached = self._texts.get(key)
        if cached is not None and cached[0] == x:
            return cached[1]
        text = json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
        plain = orjson.loads(data)
        if plain == x and len(data) <= self.MAX_BYTES // 16:
            if self._bytes > self.MAX_BYTES:
                self._texts.clear()  # one step, safe across threads; rows repeat tools near each other
                self._bytes = 0
            # a copy of the key: orjson's output keeps its whole buffer (4 kB at least)
            self._texts[(bytes(memoryview(data)), indent, ensure_ascii, sort_keys)] = (plain, text)
            self._bytes += len(data)
        return text


# --- rendering -------------------------------------------------------------------------------


def _resolve(template: str | Path | Template | None) -> Template:
    if template is None:
        return _packaged(DEFAULT_TEMPLATE)
    return load_template(template)


def _chat(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # apply_chat_template drops None-valued keys: a template then sees the key as undefined.
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def _failure(template: Template, e: Exception) -> TemplateError:
    import jinja2

    if isinstance(e, TemplateError):
        return TemplateError(f"{template.origin}: {e}")
    if isinstance(e, jinja2.exceptions.TemplateError):
        return TemplateError(f"{template.origin}: rendering failed: {e}")
    # the template's own code failed: 1/0, '{0:%s}'.format(1), ...
    return TemplateError(f"{template.origin}: rendering failed: {type(e).__name__}: {e}")


def _jinja_render(
    template: Template,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    tools: Sequence[Any] | None = None,
) -> str:
    try:
        return _compile(template.text).render(
            messages=_chat(messages), tools=tools, documents=None, add_generation_prompt=add_generation_prompt
        )
    except Exception as e:  # every failure of a template is a TemplateError
        raise _failure(template, e) from e


def _input(
    messages: Sequence[Mapping[str, Any]], family: Family | None, reasoning: Reasoning
) -> tuple[Sequence[Mapping[str, Any]], list[Any] | None]:
    """The messages and tools ``family``'s template reads (a custom template: glm-4-9b-chat's shape)."""
    shaped = families.template_input({"messages": messages}, family or families.DEFAULT_FAMILY, reasoning=reasoning)
    return shaped["messages"], shaped.get("tools")


def render(
    messages: Sequence[MessageDict] | Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
    template: str | Path | Template | None = None,
    reasoning: Reasoning = "text",
) -> str:
    """Render a conversation (an internal ``messages`` row) as text.

    Byte-identical to ``tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
    add_generation_prompt=...)`` with the same template (default: glm-4-9b-chat's official
    template), where ``messages`` and ``tools`` are ``glmdata.families.template_input`` of the row
    for the template's family (a custom template gets the row itself, glm-4-9b-chat's shape).
    ``template`` is anything ``load_template`` accepts; ``reasoning`` says what becomes of assistant
    reasoning (``template_input``). Raises ``TemplateError`` if a custom template fails to render.
    """
    resolved = _resolve(template)
    shaped, tools = _input(messages, families.family_of(resolved), reasoning)
    return _jinja_render(resolved, shaped, add_generation_prompt, tools)


# --- locating the messages in the text -------------------------------------------------------
#
# render_spans needs the text of each message. The plain way renders each message alone (the
# text before the first message is the empty conversation's), and checks that the pieces add up
# to the whole: N + 2 renders per row. The streamed way renders once: the template's output is
# read chunk by chunk from Jinja's generator while `messages` notes, each time the template's
# loop takes the next message, how many chunks have come out. That holds for templates whose
# main loop walks `messages` once, in order, and writes each message within its own loop step, not
# reading ahead (`loop.last` and `loop.nextitem` make Jinja fetch the next message early): checked
# once per template text against the plain way on probe conversations, and for each row on what
# the row shows.


def _one_by_one(template: Template, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """The text before the first message and the text of each message, rendering each alone."""
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


class _Marked(list[dict[str, Any]]):
    """The messages as the template sees them in a streamed render: a list that records, at each
    step of a loop over it, how many chunks of output came before (underscore names: the sandbox
    keeps templates away from them)."""

    def __init__(self, messages: list[dict[str, Any]], chunks: list[str]) -> None:
        super().__init__(messages)
        self._chunks = chunks
        self._marks: list[int] = []
        self._loops = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._loops += 1
        for message in list.__iter__(self):
            self._marks.append(len(self._chunks))
            yield message
        self._marks.append(len(self._chunks))


def _streamed(template: Template, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]] | None:
    """What ``_one_by_one`` gives, from one render; ``None`` where this row shows it cannot."""
    chunks: list[str] = []
    marked = _Marked(_chat(messages), chunks)
    try:
        for chunk in _compile(template.text).generate(
            messages=marked, tools=None, documents=None, add_generation_prompt=False
        ):
            chunks.append(chunk)  # one at a time: _Marked counts them while the loop runs
    except Exception as e:  # every failure of a template is a TemplateError
        raise _failure(template, e) from e
    marks = marked._marks
    if marked._loops != 1 or len(marks) != len(messages) + 1 or marks[-1] != len(chunks):
        return None  # not one whole loop over the messages, or output after it
    prefix = "".join(chunks[: marks[0]])
    pieces = ["".join(chunks[a:b]) for a, b in itertools.pairwise(marks)]
    if prefix != _empty_render(template.text) or not all(_ROLE_TAG.match(p) for p in pieces if p):
        return None
    return prefix, pieces


@lru_cache(maxsize=16)
def _empty_render(text: str) -> str:
    return _jinja_render(Template(text), [], False)


# Conversations that take every branch of the GLM-4 templates: each kind of tool, a tools block
# with and without content, a native call, an observation, empty content, loss flags, no system.
_FUNCTION = {"type": "function", "function": {"name": "get_天气", "parameters": {"b": [1, 2.5, None, True]}}}
_PROBES: tuple[list[dict[str, Any]], ...] = (
    [
        {
            "role": "system",
            "content": "",
            "tools": [_FUNCTION, *({"type": t} for t in ("python", "simple_browser", "cogview", "x"))],
        },
        {"role": "user", "content": "hi\n<b>&amp;</b>", "loss": True},
        {"role": "assistant", "metadata": "get_天气", "content": '{"city": "北京"}'},
        {"role": "observation", "content": '{"t": 20}'},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "metadata": None, "content": "done", "loss": False},
        {"role": "user", "content": "bye", "tools": []},
        {"role": "system", "content": "S", "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"role": "assistant", "content": "ok"},
    ],
    [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
    [{"role": "assistant", "content": "A"}],
)


@lru_cache(maxsize=16)
def _streams(text: str) -> bool:
    """Does the streamed way give what rendering each message alone gives, for this template?"""
    template = Template(text)
    try:
        return all(_streamed(template, probe) == _one_by_one(template, probe) for probe in _PROBES)
    except TemplateError:  # the template refuses a probe: keep to the plain way
        return False


def _pieces(messages: Sequence[Mapping[str, Any]], template: Template) -> tuple[str, list[str]]:
    """The text before the first message, and the text of each message, for ``template``."""
    if messages and _streams(template.text):
        streamed = _streamed(template, messages)
        if streamed is not None:
            return streamed
    return _one_by_one(template, messages)


def _not_separable(template: Template) -> TemplateError:
    return TemplateError(
        f"{template.origin}: cannot locate turns: rendering the messages one at a time does not "
        "reproduce the whole conversation, so trained spans cannot be found with this template"
    )


def render_spans(
    messages: Sequence[MessageDict] | Sequence[Mapping[str, Any]],
    *,
    train_on: TrainOn = "assistant",
    template: str | Path | Template | None = None,
    reasoning: Reasoning = "text",
) -> Rendered:
    """Render a conversation for training, with the character spans that are trained.

    ``text`` is ``render(messages)`` followed by the tag that ends the last turn: ``<|user|>``, as
    the official GLM-4 finetune demo builds its input (it appends ``<|user|>``, id 151336, as "EOS
    for chat"); for GLM-4.5/4.6, ``<|observation|>`` when the last turn is a tool call
    (``Family.end_tag``).

    ``train_on``:
    - ``"assistant"`` (the demo's per-message mode, ``combine: False``): for each trained
      message, everything after its opening role tag (the metadata line of a native tool call,
      the newline, the content; for GLM-4.5/4.6 the ``<think>`` block, the content and the tool
      calls, but not the empty ``<think></think>`` of a turn before the last user message) plus
      the role tag that ends the turn (the next tag rendered, or the appended one). GLM has no
      end-of-turn token: the next tag is what the model learns to stop on. Assistant messages are
      trained; system, user and observation messages are not. A message's ``loss`` (ChatGLM3's
      convention) overrides that: ``True`` trains any message the same way, ``False`` leaves an
      assistant message out.
    - ``"last"``: only the final assistant turn that renders (the demo's ``combine: True``, the
      default of its lora.yaml, which silently trains one turn per conversation),
      spanned as above; ``loss`` flags are ignored. Unlike the demo, the first token after the
      last ``<|assistant|>`` is trained: the demo shifts its combine-mode mask twice and loses it.
    - ``"all"``: every character, ``[gMASK]<sop>`` included, which is what plain-text SFT of the
      rendered text trains (the tool-call tutorial's pipeline): as labels are shifted inside the
      model, the first token is never predicted and ``<sop>`` is predicted from ``[gMASK]``.

    For a known template (``known_template``) the spans are the ``{% generation %}`` blocks of its
    training variant (``KNOWN_TEMPLATES``), read as transformers' ``return_assistant_tokens_mask``
    reads them, from one render of the family's input (``glmdata.families.template_input``; for
    glm-4-9b-chat, v1 and v2, the same spans are read off one render of the official template,
    which is faster); so for a custom template with such markers. A custom template without
    markers is located message by message: it must render as a fixed prefix followed by each message rendered alone, each
    starting with a role tag (else ``TemplateError``). One span per trained turn (adjacent spans
    are not merged); messages that render nothing are skipped. Raises ``NothingToTrain`` when no
    span results.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}; got {train_on!r}")
    template = _resolve(template)
    family = families.family_of(template)
    if train_on == "last":  # loss flags ignored: the role defaults alone say which turn is the last trained
        messages = [{k: v for k, v in m.items() if k != "loss"} if "loss" in m else m for m in messages]
    shaped, tools = _input(messages, family, reasoning)
    if family is not None and family.name in _LOCATED_BY_PIECES:
        return _piece_spans(_packaged(family.template), shaped, train_on)
    if family is not None:
        return _marked_spans(_packaged(family.training_template), shaped, tools, family, train_on)
    if template.has_generation_markers:
        return _marked_spans(template, shaped, tools, families.DEFAULT_FAMILY, train_on)
    return _piece_spans(template, shaped, train_on)


# Families whose spans come from reading each message's text off one render of the official
# template (``_pieces``) rather than from their training variant's markers: the same spans
# (tests/test_families.py holds them equal on every shared row and on generated conversations), in
# less than half the time on the hot path of ``glmdata tokenize``, as their templates walk the
# messages once, in order. GLM-4-0414 (system messages first) and GLM-4.5 (two passes, one
# <|observation|> per run of results) cannot be read that way.
_LOCATED_BY_PIECES = frozenset({"glm-4-9b-chat", "glm-4-9b-chat-v2"})


def _marked_spans(
    template: Template,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Any] | None,
    family: Family,
    train_on: TrainOn,
) -> Rendered:
    """``render_spans`` from the ``{% generation %}`` blocks of a training template."""
    rendered, blocks = _tracked_render(template, messages, tools)
    text = rendered + family.end_tag(messages)
    if train_on == "all":
        return Rendered(text, [(0, len(text))])
    spans: list[tuple[int, int]] = []
    for start, end in sorted(blocks):
        if end <= start:
            continue
        if spans and start == spans[-1][1] and _ROLE_TAG.fullmatch(rendered, start, end):
            spans[-1] = (spans[-1][0], end)  # the tag that ends the turn before
        else:
            spans.append((start, end))
    if spans and spans[-1][1] == len(rendered):
        spans[-1] = (spans[-1][0], len(text))  # the last turn ends at the appended tag
    if train_on == "last":
        spans = spans[-1:]
    if not spans:
        raise NothingToTrain(_nothing_to_train_message(train_on))
    return Rendered(text, spans)


class _Tracker:
    """Where each ``{% generation %}`` block of a render is: the chunks written so far, and the
    ``(start, end)`` of each block, as transformers' AssistantTracker records them (a block's start
    is the length of the output written before it)."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.blocks: list[tuple[int, int]] = []
        self._counted = 0
        self._length = 0

    def record(self, length: int) -> None:
        chunks = self.chunks
        if self._counted < len(chunks):
            self._length += sum(map(len, chunks[self._counted :]))
            self._counted = len(chunks)
        self.blocks.append((self._length, self._length + length))


_TRACKER: ContextVar[_Tracker | None] = ContextVar("glmdata_generation_tracker", default=None)


def _tracked_render(
    template: Template, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None
) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``template`` over ``messages`` and the character spans of its generation blocks."""
    tracker = _Tracker()
    token = _TRACKER.set(tracker)
    chunks = tracker.chunks
    try:
        for chunk in _compile(template.text).generate(
            messages=_chat(messages), tools=tools, documents=None, add_generation_prompt=False
        ):
            chunks.append(chunk)  # one at a time: a block's start is the length written before it
    except Exception as e:  # every failure of a template is a TemplateError
        raise _failure(template, e) from e
    finally:
        _TRACKER.reset(token)
    return "".join(chunks), tracker.blocks


def _piece_spans(template: Template, messages: Sequence[Mapping[str, Any]], train_on: TrainOn) -> Rendered:
    """``render_spans`` for a custom template without generation markers: each message's text."""
    prefix, pieces = _pieces(messages, template)
    if messages and not prefix and not any(pieces):
        # e.g. a template of undefined names only ({{ config }}): nothing to locate, nothing to train
        raise TemplateError(
            f"{template.origin}: renders nothing for these {len(messages)} messages: is it a chat template?"
        )
    text = prefix + "".join(pieces) + END_OF_CHAT
    if train_on == "all":
        return Rendered(text, [(0, len(text))])

    # (message, start offset, length of its opening tag) for each message that renders.
    turns = []
    position = len(prefix)
    for message, piece in zip(messages, pieces, strict=True):
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
