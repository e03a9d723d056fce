"""glmdata.render: byte parity with transformers' apply_chat_template, templates, trained spans."""

from __future__ import annotations

import enum
import itertools
import json
import subprocess
import sys
import uuid
from functools import lru_cache
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizer import FIXTURES, OFFICIAL_TEMPLATE, build_tiny_tokenizer, conversations

from glmdata.render import (
    DEFAULT_TEMPLATE,
    END_OF_CHAT,
    GENERATION_TEMPLATE,
    TRAIN_ON,
    NothingToTrain,
    Rendered,
    Template,
    TemplateError,
    install_template,
    load_template,
    render,
    render_spans,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA_FILES = sorted((SHARED / "data").rglob("*.json")) if (SHARED / "data").is_dir() else []
DATA_FILES = sorted(p for p in (REPO / "data").iterdir() if p.suffix in (".json", ".jsonl"))
GENERATION_TEXT = load_template(GENERATION_TEMPLATE).text
# The official template with a loop over the messages before it: the same bytes, but render_spans
# cannot read it in one render and renders each message alone (the plain way).
PER_MESSAGE = Template("{% for m in messages %}{% endfor %}" + OFFICIAL_TEMPLATE, "official, per message")
GOLDEN = json.loads((FIXTURES / "golden.json").read_text(encoding="utf-8"))

hypothesis_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def tiny():
    return build_tiny_tokenizer(OFFICIAL_TEMPLATE)


@pytest.fixture
def hf():
    """transformers' side of the parity tests: a fast tokenizer carrying the official template."""
    return tiny()


def hf_render(tokenizer, messages, add_generation_prompt=False, chat_template=None):
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=chat_template
    )


def generation_indices(template_text, messages):
    """Character spans of ``{% generation %}`` blocks, as transformers computes them."""
    from transformers.utils.chat_template_utils import render_jinja_template

    chats, indices = render_jinja_template(
        [[{k: v for k, v in m.items() if v is not None} for m in messages]],
        chat_template=template_text,
        return_assistant_tokens_mask=True,
    )
    return chats[0], indices[0]


def merged(spans):
    out = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out


def shared_rows(path: Path, call_style: str = "native") -> list[list[dict]]:
    """Every converted row of a dataset file (rejected rows too, when they have a row)."""
    from glmdata.convert import Options, convert_file

    return [r.row["messages"] for r in convert_file(path, Options(call_style=call_style)) if r.row is not None]


# --- the template files ------------------------------------------------------------------------


def test_packaged_template_is_the_official_v1_text():
    packaged = (REPO / "glmdata" / "templates" / "glm-4-9b-chat.jinja").read_bytes()
    assert packaged == (FIXTURES / "glm-4-9b-chat.v1.jinja").read_bytes()
    assert load_template().text == OFFICIAL_TEMPLATE
    assert load_template(DEFAULT_TEMPLATE).text == OFFICIAL_TEMPLATE


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared not present")
def test_fixture_templates_are_copies_of_shared():
    for name in ("glm-4-9b-chat.v1.jinja", "glm-4-9b-chat.v2.jinja", "glm-4-9b-0414.jinja"):
        assert (FIXTURES / name).read_bytes() == (SHARED / "templates" / name).read_bytes()


def test_v2_differs_from_v1_only_in_the_assistant_name():
    v2 = (FIXTURES / "glm-4-9b-chat.v2.jinja").read_text(encoding="utf-8")
    assert OFFICIAL_TEMPLATE.replace("名为 ChatGLM 的", "名为 GLM-4 的") == v2


# --- golden files and parity -------------------------------------------------------------------


@pytest.mark.parametrize("case", GOLDEN, ids=[c["name"] for c in GOLDEN])
def test_golden(case, hf):
    expected = (FIXTURES / "golden" / f"{case['name']}.txt").read_bytes().decode("utf-8")
    flag = case["add_generation_prompt"]
    assert render(case["messages"], add_generation_prompt=flag) == expected
    assert hf_render(hf, case["messages"], flag) == expected


@given(conversations(), st.booleans())
@hypothesis_settings
def test_parity_with_apply_chat_template(messages, add_generation_prompt):
    tokenizer = tiny()
    expected = hf_render(tokenizer, messages, add_generation_prompt)
    assert render(messages, add_generation_prompt=add_generation_prompt) == expected
    generation = load_template(GENERATION_TEMPLATE)
    assert render(messages, add_generation_prompt=add_generation_prompt, template=generation) == expected
    assert hf_render(tokenizer, messages, add_generation_prompt, chat_template=GENERATION_TEXT) == expected


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "x", "metadata": None, "tools": None, "loss": None}],  # Arrow-style nulls
        [{"role": "user", "content": 12}],  # not a string
        [{"role": "assistant", "content": "x", "metadata": 7}],
        [{"role": "system", "content": "", "tools": [{"type": "function", "function": {"name": 3}}]}],
        [{"role": "system", "content": "", "tools": [{"type": "function", "function": {"name": "f", "x": (1, 2)}}]}],
        [{"role": "system", "content": "", "tools": ["python", {"type": ["x"]}, {"function": {"name": "f"}}]}],
        [{"role": "system", "content": "", "tools": {"type": "python"}}],  # a dict iterates over its keys
        [{"content": "no role"}, {"role": "assistant"}],
        [
            {
                "role": "observation",
                "content": "ø",
                "tools": [{"type": "function", "function": {"name": "f", "v": float("nan")}}],
            }
        ],
    ],
)
def test_unusual_values_render_like_apply_chat_template(messages, hf):
    for flag in (False, True):
        assert render(messages, add_generation_prompt=flag) == hf_render(hf, messages, flag)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec="utf-8")),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(st.characters(codec="utf-8")), inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=2)
    ),
    max_leaves=20,
)


def tojson_in_a_template(value, **options):
    """What a template's ``tojson(**options)`` writes for ``value`` (nested in a list: a message key
    whose value is None is dropped before rendering)."""
    arguments = ", ".join(f"{name}={option!r}" for name, option in options.items())
    template = Template(f"{{{{ messages[0]['v'][0] | tojson({arguments}) }}}}", "tojson")
    return render([{"role": "user", "content": "", "v": [value]}], template=template)


def assert_tojson_is_json_dumps(value, **options):
    try:
        expected = json.dumps(value, **{"ensure_ascii": False, **options})
    except (TypeError, ValueError):
        with pytest.raises(TemplateError):
            tojson_in_a_template(value, **options)
        return
    assert tojson_in_a_template(value, **options) == expected


TOJSON_OPTIONS = [
    {},
    {"indent": 4},
    {"indent": 2, "sort_keys": True},
    {"ensure_ascii": True},
    {"separators": (",", ":")},
]


@given(any_json, st.sampled_from(TOJSON_OPTIONS))
@hypothesis_settings
def test_tojson_is_json_dumps_cached_or_not(value, options):
    for _ in range(2):  # the second time from the cache, when the value is cached
        assert_tojson_is_json_dumps(value, **options)


class Colour(enum.Enum):
    RED = "x"


class Letter(str, enum.Enum):
    X = "x"


class Number(enum.IntEnum):
    ONE = 1


class Text(str):
    pass


# Values that orjson writes alike (null, "x", 1) or refuses, which json.dumps writes differently or refuses.
LOOK_ALIKES = [
    None, float("nan"), float("inf"), float("-inf"), 0, 0.0, -0.0, False, 1, 1.0, True, Number.ONE,
    "x", Letter.X, Text("x"), Colour.RED, orjson.Fragment(b'"x"'), uuid.UUID(int=1), str(uuid.UUID(int=1)),
    (1,), [1], {"1": 1}, {1: 1}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, 2**63, 2**64, 2**80, 1e16,
]  # fmt: skip


@pytest.mark.parametrize("options", TOJSON_OPTIONS[:3])
def test_tojson_cache_tells_look_alikes_apart(options):
    for values in (LOOK_ALIKES, LOOK_ALIKES[::-1]):
        for value in values * 2:
            for wrapped in (value, [value], {"k": value}):
                assert_tojson_is_json_dumps(wrapped, **options)


def test_tojson_cache_stays_bounded():
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2500):  # 2,500 distinct values of 8 kB: about 60 MB if all were kept
            assert_tojson_is_json_dumps([f"{i:05d}" + "x" * 8000], indent=4)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000_000


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("path", SHARED_DATA_FILES, ids=[p.name for p in SHARED_DATA_FILES])
@pytest.mark.parametrize("call_style", ["native", "json"])
def test_parity_on_every_shared_row(path, call_style, hf):
    rows = shared_rows(path, call_style)
    assert rows
    mismatched = []
    for index, messages in enumerate(rows):
        for flag in (False, True):
            expected = hf_render(hf, messages, flag)
            if render(messages, add_generation_prompt=flag) != expected:
                mismatched.append((index, flag))
            if hf_render(hf, messages, flag, chat_template=GENERATION_TEXT) != expected:
                mismatched.append((index, flag, "generation template"))
    assert not mismatched, f"{len(mismatched)} of {len(rows)} rows differ, first: {mismatched[:5]}"


def test_templates_from_a_tokenizer_render_like_it(tmp_path, hf):
    v2 = (FIXTURES / "glm-4-9b-chat.v2.jinja").read_text(encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": v2}), encoding="utf-8")
    messages = GOLDEN[2]["messages"]
    assert render(messages, template=tmp_path) == hf_render(hf, messages, chat_template=v2)
    assert "名为 GLM-4 的" in render(messages, template=tmp_path)


def test_custom_template_renders_through_jinja(hf, tmp_path):
    # GLM-4-0414's layout, one comment off its text: not the known glm-4-0414 template, so rendered
    # over the row itself (glm-4-9b-chat's input shape), as any custom template
    custom = (FIXTURES / "glm-4-9b-0414.jinja").read_text(encoding="utf-8") + "{# custom #}"
    path = tmp_path / "custom.jinja"
    path.write_text(custom, encoding="utf-8")
    for case in GOLDEN:
        for flag in (False, True):
            assert render(case["messages"], add_generation_prompt=flag, template=path) == hf_render(
                hf, case["messages"], flag, chat_template=custom
            )


# Keys a message may have or lack, names of dict's own attributes among them: Jinja looks up m[k]
# and m.k as a key, then as an attribute (render takes a shorter way for a plain dict).
LOOKUP_NAMES = ["role", "content", "tools", "metadata", "x", "items", "get", "keys", "values", "copy"]


@given(
    st.lists(
        st.dictionaries(st.sampled_from(LOOKUP_NAMES), st.text(max_size=3) | st.integers() | st.none(), max_size=4),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(LOOKUP_NAMES),
)
@hypothesis_settings
def test_key_and_attribute_lookups_render_like_apply_chat_template(messages, name):
    shown = "{{ L is defined }} {{ L is callable }} {% if L is not callable %}{{ L }}{% endif %}"
    looked_up = [shown.replace("L", lookup) for lookup in (f"m[{name!r}]", f"m.{name}")]
    template = "{% for m in messages %}[" + " | ".join(looked_up) + f" | {{{{ m.get({name!r}) }}}}]{{% endfor %}}"
    assert render(messages, template=Template(template)) == hf_render(tiny(), messages, chat_template=template)


def test_template_globals_render_like_apply_chat_template(hf):
    template = (
        "{{ range(3) | list }} {{ dict(a=1) }} {% set ns = namespace(a=1) %}{% set ns.a = 2 %}{{ ns.a }} "
        "{% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }} {% set j = joiner('|') %}{{ j() }}{{ j() }} "
        "{{ strftime_now('%Y') }} {{ raise_exception is defined }} {{ messages | length }} {{ tools }}"
    )
    messages = GOLDEN[0]["messages"]
    assert render(messages, template=Template(template)) == hf_render(hf, messages, chat_template=template)


def test_custom_template_errors_are_template_errors():
    with pytest.raises(TemplateError, match="does not compile"):
        render([{"role": "user", "content": "x"}], template=Template("{% for %}", "broken"))
    with pytest.raises(TemplateError, match="stop here"):
        render([{"role": "user", "content": "x"}], template=Template("{{ raise_exception('stop here') }}"))


# --- the generation (training) variant ---------------------------------------------------------


@given(conversations())
@hypothesis_settings
def test_generation_markers_cover_the_trained_spans(messages):
    try:
        rendered = render_spans(messages)
    except NothingToTrain:
        return
    text, indices = generation_indices(GENERATION_TEXT, messages)
    assert text + END_OF_CHAT == rendered.text
    ours = merged((start, min(end, len(text))) for start, end in rendered.spans)
    assert merged(indices) == ours


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
def test_generation_markers_on_shared_tool_rows():
    path = SHARED / "data" / "glaive_toolcall_zh_1k.json"
    for messages in shared_rows(path):
        rendered = render_spans(messages)
        text, indices = generation_indices(GENERATION_TEXT, messages)
        assert merged(indices) == merged((s, min(e, len(text))) for s, e in rendered.spans)


def test_install_template(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_tiny_tokenizer(OFFICIAL_TEMPLATE)
    tokenizer.save_pretrained(str(tmp_path))
    target = install_template(tmp_path)
    assert target == tmp_path / "chat_template.jinja"
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert loaded.chat_template == GENERATION_TEXT
    assert load_template(tmp_path).text == GENERATION_TEXT

    install_template(tmp_path, training=False)
    assert AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True).chat_template == OFFICIAL_TEMPLATE


def test_install_template_keeps_a_config_copy_in_step(tmp_path):
    config = {"tokenizer_class": "X", "chat_template": "old", "eos_token": "<|endoftext|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    install_template(tmp_path)
    updated = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert list(updated) == list(config)
    assert updated["chat_template"] == GENERATION_TEXT
    assert (tmp_path / "chat_template.jinja").read_text(encoding="utf-8") == GENERATION_TEXT


def test_install_template_needs_a_directory(tmp_path):
    with pytest.raises(TemplateError, match="not a directory"):
        install_template(tmp_path / "missing")


# --- load_template -----------------------------------------------------------------------------


def test_load_template_sources(tmp_path):
    jinja_file = tmp_path / "t.jinja"
    jinja_file.write_text("A{{ messages | length }}", encoding="utf-8")
    assert load_template(jinja_file).text == "A{{ messages | length }}"
    assert load_template(str(jinja_file)).origin == str(jinja_file)

    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": "B"}), encoding="utf-8")
    assert load_template(config).text == "B"
    assert load_template(tmp_path).text == "B"  # a directory without chat_template.jinja

    (tmp_path / "chat_template.jinja").write_text("C", encoding="utf-8")
    assert load_template(tmp_path).text == "C"  # chat_template.jinja wins, as in transformers

    config.write_text(
        json.dumps({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})
    )
    assert load_template(config).text == "D"
    config.write_text(json.dumps({"chat_template": [{"name": "only", "template": "O"}]}))
    assert load_template(config).text == "O"

    template = load_template()
    assert load_template(template) is template
    assert load_template("glm-4-9b-chat.generation.jinja").text == GENERATION_TEXT


def test_load_template_keeps_line_endings(tmp_path):
    path = tmp_path / "crlf.jinja"
    path.write_bytes(b"A\r\nB")
    assert load_template(path).text == "A\r\nB"


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: d / "missing.jinja", "no such file or directory"),
        (lambda d: d, "looked for chat_template.jinja and tokenizer_config.json"),
        (lambda d: _write(d / "tokenizer_config.json", "{}"), "has no chat_template"),
        (lambda d: _write(d / "tokenizer_config.json", "{not json"), "cannot read"),
        (
            lambda d: _write(
                d / "tokenizer_config.json",
                json.dumps({"chat_template": [{"name": "a", "template": "A"}, {"name": "b", "template": "B"}]}),
            ),
            "none named 'default'",
        ),
        (lambda d: _write(d / "empty.jinja", "  \n"), "is empty"),
    ],
)
def test_load_template_errors(tmp_path, setup, match):
    with pytest.raises(TemplateError, match=match):
        load_template(setup(tmp_path))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- render_spans ------------------------------------------------------------------------------

TOOL_ROW = [
    {"role": "system", "content": "", "tools": [{"type": "python"}]},
    {"role": "user", "content": "天气?"},
    {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京"}'},
    {"role": "observation", "content": "晴"},
    {"role": "assistant", "content": "晴天。"},
]


def texts(rendered: Rendered) -> list[str]:
    return [rendered.text[start:end] for start, end in rendered.spans]


def test_render_spans_assistant():
    rendered = render_spans(TOOL_ROW)
    assert rendered.text == render(TOOL_ROW) + "<|user|>"
    # After each <|assistant|> tag: tool-name line, newline, content, and the tag that ends the turn.
    assert texts(rendered) == ['get_weather\n{"city": "北京"}<|observation|>', "\n晴天。<|user|>"]


def test_render_spans_last_and_all():
    assert texts(render_spans(TOOL_ROW, train_on="last")) == ["\n晴天。<|user|>"]
    rendered = render_spans(TOOL_ROW, train_on="all")
    assert rendered.spans == [(0, len(rendered.text))]
    assert rendered.text.startswith("[gMASK]<sop><|system|>")


def test_render_spans_loss_flags():
    row = [
        {"role": "system", "content": "S", "loss": True},
        {"role": "user", "content": "U", "loss": True},
        {"role": "assistant", "content": "A1", "loss": False},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    assert texts(render_spans(row)) == ["\nS<|user|>", "\nU<|assistant|>", "\nA2<|user|>"]
    # train_on="last" ignores flags; "all" trains everything anyway.
    assert texts(render_spans(row, train_on="last")) == ["\nA2<|user|>"]


def test_render_spans_tools_system_message_with_loss():
    row = [
        {"role": "system", "content": "S", "tools": [], "loss": True},
        {"role": "user", "content": "U"},
    ]
    rendered = render_spans(row)
    [span] = texts(rendered)
    # Everything after the first <|system|>, the second system block included, and the end tag.
    assert span.startswith("\n你是一个名为 ChatGLM") and span.endswith("# 可用工具<|system|>\nS<|user|>")


def test_render_spans_skips_messages_that_render_nothing():
    row = [
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
        {"role": "assistant", "content": ""},  # dropped by the template
        {"role": "user", "content": "V"},
        {"role": "assistant", "content": ""},
    ]
    assert texts(render_spans(row)) == ["\nA<|user|>"]
    assert texts(render_spans(row, train_on="last")) == ["\nA<|user|>"]


@pytest.mark.parametrize("train_on", ["assistant", "last"])
def test_nothing_to_train(train_on):
    for row in (
        [{"role": "user", "content": "U"}],
        [{"role": "user", "content": "U"}, {"role": "assistant", "content": ""}],
        [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A", "loss": False}]
        if train_on == "assistant"
        else [],
    ):
        with pytest.raises(NothingToTrain):
            render_spans(row, train_on=train_on)
    assert render_spans([{"role": "user", "content": "U"}], train_on="all").spans


def test_render_spans_rejects_unknown_train_on():
    with pytest.raises(ValueError, match="train_on"):
        render_spans(TOOL_ROW, train_on="assistants")


def spans_or_nothing(messages, train_on, template=None):
    try:
        return render_spans(messages, train_on=train_on, template=template)
    except NothingToTrain:
        return None


@given(conversations(), st.sampled_from(TRAIN_ON))
@hypothesis_settings
def test_render_spans_in_one_render_equal_rendering_each_message_alone(messages, train_on):
    rendered = spans_or_nothing(messages, train_on)
    assert rendered == spans_or_nothing(messages, train_on, PER_MESSAGE)
    if rendered is not None:
        assert rendered.text == render(messages) + END_OF_CHAT
        assert all(0 <= a < b <= len(rendered.text) for a, b in rendered.spans)
        assert all(b <= c for (_, b), (c, _) in itertools.pairwise(rendered.spans))


SPAN_FILES = DATA_FILES + SHARED_DATA_FILES


@pytest.mark.parametrize("path", SPAN_FILES, ids=[p.name for p in SPAN_FILES])
def test_render_spans_in_one_render_on_every_shipped_row(path):
    rows = shared_rows(path)
    assert rows
    differ = []
    for index, messages in enumerate(rows):
        for train_on in TRAIN_ON:
            plain = spans_or_nothing(messages, train_on, PER_MESSAGE)
            for template in (DEFAULT_TEMPLATE, GENERATION_TEMPLATE):
                if spans_or_nothing(messages, train_on, template) != plain:
                    differ.append((index, train_on, template))
    assert not differ, f"{len(differ)} differ, first: {differ[:5]}"


def count_renders(monkeypatch):
    """Calls of Jinja's render and generate from now on (names, in order)."""
    import jinja2

    calls = []

    def counting(name):
        original = getattr(jinja2.Template, name)

        def counted(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        return counted

    for name in ("render", "generate"):
        monkeypatch.setattr(jinja2.Template, name, counting(name))
    return calls


def in_place_of_the_loop(text: str) -> Template:
    """The official template with ``text`` at the start of its loop over the messages."""
    loop = "{% for item in messages %}"
    assert OFFICIAL_TEMPLATE.count(loop) == 1
    return Template(OFFICIAL_TEMPLATE.replace(loop, loop + text), f"official + {text}")


# Reads one message ahead: one render cannot tell where a message starts (Jinja's loop fetches the
# next message early), so render_spans renders each message alone.
LOOKS_AHEAD = in_place_of_the_loop("{% if loop.last %}{% endif %}")


@pytest.mark.parametrize(
    "template",
    [DEFAULT_TEMPLATE, GENERATION_TEMPLATE, FIXTURES / "glm-4-9b-chat.v2.jinja"],
    ids=["v1", "generation", "v2"],
)
def test_render_spans_renders_a_row_once(template, monkeypatch):
    render_spans(TOOL_ROW, template=template)  # the first time checks the template against the plain way
    calls = count_renders(monkeypatch)
    render_spans(TOOL_ROW, template=template)
    assert calls == ["generate"]


@pytest.mark.parametrize(
    "template",
    [
        PER_MESSAGE,
        LOOKS_AHEAD,
        # GLM-4-0414's layout (system messages first) as a custom template: one comment off its text
        Template((FIXTURES / "glm-4-9b-0414.jinja").read_text(encoding="utf-8") + "{# custom #}", "0414 custom"),
    ],
    ids=["two-loops", "looks-ahead", "0414"],
)
def test_render_spans_renders_each_message_alone_where_one_render_cannot_tell(template, monkeypatch):
    render_spans(TOOL_ROW, template=template)
    calls = count_renders(monkeypatch)
    render_spans(TOOL_ROW, template=template)
    assert calls.count("render") == len(TOOL_ROW) + 2


@given(conversations(), st.sampled_from(TRAIN_ON))
@hypothesis_settings
def test_render_spans_of_a_template_that_looks_ahead(messages, train_on):
    assert spans_or_nothing(messages, train_on, LOOKS_AHEAD) == spans_or_nothing(messages, train_on)


def test_render_spans_refuses_a_template_whose_messages_depend_on_their_place():
    # Each message rendered alone is the first: the pieces do not add up, so turns cannot be located.
    first = in_place_of_the_loop("{% if loop.first %}<|system|>\nS{% endif %}")
    assert render(TOOL_ROW, template=first).count("<|system|>\nS") == 1
    with pytest.raises(TemplateError, match="cannot locate turns"):
        render_spans(TOOL_ROW, template=first)


def test_render_spans_checks_each_row_it_reads_in_one_render():
    # The text before the loop depends on the first message: the probes do not show it, this row does.
    magic = Template(
        "{% if messages and messages[0]['content'] == 'magic' %}<|system|>\nM{% endif %}" + OFFICIAL_TEMPLATE
    )
    assert render_spans(TOOL_ROW, template=magic) == render_spans(TOOL_ROW)
    with pytest.raises(TemplateError, match="cannot locate turns"):
        render_spans([{"role": "user", "content": "magic"}, {"role": "assistant", "content": "A"}], template=magic)


def test_render_spans_with_a_custom_template():
    path = FIXTURES / "glm-4-9b-0414.jinja"
    rendered = render_spans(TOOL_ROW[1:], template=path)
    assert texts(rendered) == ['get_weather \n{"city": "北京"}<|observation|>', "\n晴天。<|user|>"]


def test_render_spans_needs_a_separable_template():
    # Renders the number of messages: not a concatenation of per-message pieces.
    with pytest.raises(TemplateError, match="cannot locate turns"):
        render_spans(TOOL_ROW, template=Template("<|user|>{{ messages | length }}"))


# --- import weight -----------------------------------------------------------------------------


def test_importing_render_masks_tokenizer_stays_light():
    code = (
        "import sys, glmdata.render, glmdata.masks, glmdata.tokenizer; "
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'tokenizers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})


def test_tools_that_differ_only_in_nan_and_null_are_not_one_cached_block() -> None:
    """tojson's cache is keyed by orjson's text, which writes NaN and infinities as null: such
    tools must still render as json writes them (NaN, Infinity) and null as null."""

    def rendered(value: object) -> str:
        declared = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "default": value}}}]
        return render([{"role": "system", "content": "", "tools": declared}, {"role": "user", "content": "hi"}])

    texts = [rendered(v) for v in (None, float("nan"), float("inf"), None)]
    assert '"default": null' in texts[0] and '"default": NaN' in texts[1] and '"default": Infinity' in texts[2]
    assert texts[3] == texts[0]
