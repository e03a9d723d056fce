"""glmdata.families and the family templates: each official template renders byte for byte as
transformers' apply_chat_template renders it over ``template_input`` of the row, its training
variant renders the same bytes, and the trained spans and token masks are the training variant's
``{% generation %}`` blocks, as transformers' ``return_assistant_tokens_mask`` reads them."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizer import FIXTURES, any_text, build_tiny_tokenizer, json_values, names, tools_lists

from glmdata.convert import Options, convert_file
from glmdata.families import (
    FAMILIES,
    Family,
    family_of,
    reasoning_as_text,
    template_input,
)
from glmdata.masks import tokenize
from glmdata.render import (
    KNOWN_TEMPLATES,
    NothingToTrain,
    Template,
    known_template,
    load_template,
    render,
    render_spans,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "glmdata" / "templates"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA_FILES = sorted((SHARED / "data").rglob("*.json")) if (SHARED / "data").is_dir() else []
#: The packaged copy of each official template, the fixture copy and the name in ../shared/templates.
OFFICIAL_FILES = {
    "glm-4-0414": ("glm-4-9b-0414.jinja", "glm-4-9b-0414.jinja"),
    "glm-4.5": ("glm-4.5.jinja", "glm-4.5.jinja"),
    "glm-4.6": ("glm-4.6.jinja", "glm-4.6.jinja"),
    "glm-4-9b-chat": ("glm-4-9b-chat.v1.jinja", "glm-4-9b-chat.v1.jinja"),
    "glm-4-9b-chat-v2": ("glm-4-9b-chat.v2.jinja", "glm-4-9b-chat.v2.jinja"),
}
#: GLM-4.5's added special tokens (zai-org/GLM-4.5 tokenizer_config.json) that its template writes.
GLM45_EXTRA_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "/nothink",
)
TOOL_CALLS_FAMILIES = [name for name, f in FAMILIES.items() if f.calls == "tool_calls"]

hypothesis_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=1)
def tiny():
    """transformers' side: a fast tokenizer with GLM-4's ids and GLM-4.5's added tokens."""
    from tokenizers import AddedToken

    tokenizer = build_tiny_tokenizer(None)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in GLM45_EXTRA_TOKENS])
    return tokenizer


def hf_render(family: Family, row: dict, add_generation_prompt: bool = False, template: str | None = None) -> str:
    shaped = template_input(row, family)
    return tiny().apply_chat_template(
        shaped["messages"],
        tools=shaped.get("tools"),
        chat_template=template or load_template(family.template).text,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


# --- the files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OFFICIAL_FILES))
def test_packaged_templates_are_the_official_text(name):
    fixture, _ = OFFICIAL_FILES[name]
    packaged = (TEMPLATES / f"{name}.jinja").read_bytes()
    assert packaged == (FIXTURES / fixture).read_bytes()
    readme = (TEMPLATES / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(packaged).hexdigest() in readme


@pytest.mark.skipif(not (SHARED / "templates").is_dir(), reason="../shared not present")
@pytest.mark.parametrize("name", sorted(OFFICIAL_FILES))
def test_fixture_templates_are_copies_of_shared(name):
    fixture, shared = OFFICIAL_FILES[name]
    assert (FIXTURES / fixture).read_bytes() == (SHARED / "templates" / shared).read_bytes()


def test_glm46_differs_from_glm45_as_documented():
    glm45 = (TEMPLATES / "glm-4.5.jinja").read_text(encoding="utf-8")
    glm46 = (TEMPLATES / "glm-4.6.jinja").read_text(encoding="utf-8")
    assert glm45.replace("tc.arguments %}", "tc.arguments or {} %}") + "\n" == glm46
    variant45 = (TEMPLATES / "glm-4.5.generation.jinja").read_text(encoding="utf-8")
    variant46 = (TEMPLATES / "glm-4.6.generation.jinja").read_text(encoding="utf-8")
    assert re.sub("GLM-4.6 chat template|glm-4.6", "", variant46) == re.sub(
        r"GLM-4.5 chat template \(glm4_moe: GLM-4.5, GLM-4.5-Air\)|glm-4.5", "", variant45
    ).replace("tc.arguments %}", "tc.arguments or {} %}")


def test_every_family_is_packaged_and_known():
    assert set(FAMILIES) == set(KNOWN_TEMPLATES)
    for name, family in FAMILIES.items():
        assert family.template == name and KNOWN_TEMPLATES[name] == family.training_template
        original, training = load_template(name), load_template(family.training_template)
        assert training.has_generation_markers and not original.has_generation_markers
        assert known_template(original) == known_template(training.text) == name
        assert family_of(original) is family_of(training) is family_of(name) is family
        assert family_of(f"{name}.generation") is family_of(original.text) is family
        assert family_of(TEMPLATES / f"{name}.jinja") is family
        assert known_template(original.text + "\n") is None and family_of(original.text + " ") is None


def test_family_profiles():
    assert FAMILIES["glm-4-9b-chat"].tools == "system" and FAMILIES["glm-4-9b-chat"].calls == "metadata"
    assert FAMILIES["glm-4-0414"].tools == "variable" and FAMILIES["glm-4-0414"].results == "observation"
    assert FAMILIES["glm-4.5"].calls == "tool_calls" and FAMILIES["glm-4.5"].results == "tool"
    assert [n for n, f in FAMILIES.items() if f.reasoning] == ["glm-4.5", "glm-4.6"]


# --- template_input --------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ROW = {
    "messages": [
        {"role": "system", "content": "", "tools": [WEATHER]},
        {"role": "user", "content": "北京天气?"},
        {"role": "assistant", "content": "我查一下。", "reasoning": "要调用工具"},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京", "days": 2}'},
        {"role": "observation", "content": '{"t": 20}'},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "上海"}'},
        {"role": "observation", "content": '{"t": 25}'},
        {"role": "assistant", "content": "北京 20 度，上海 25 度。", "reasoning": "比较"},
    ]
}


def test_glm4_chat_input_is_the_row_itself():
    row = {"messages": [m for m in ROW["messages"] if "reasoning" not in m]}
    assert template_input(row, FAMILIES["glm-4-9b-chat"])["messages"] is row["messages"]
    assert template_input(row, FAMILIES["glm-4-9b-chat"]).keys() == {"messages"}


def test_reasoning_without_a_slot_is_text_or_dropped():
    family = FAMILIES["glm-4-9b-chat"]
    text = template_input(ROW, family)["messages"]
    assert text[2] == {"role": "assistant", "content": "<think>要调用工具</think>\n我查一下。"}
    assert text[-1]["content"] == reasoning_as_text("比较", "北京 20 度，上海 25 度。")
    dropped = template_input(ROW, family, reasoning="drop")["messages"]
    assert dropped[2] == {"role": "assistant", "content": "我查一下。"}
    assert all("reasoning" not in m for m in text + dropped)
    # a call's content is its arguments: its reasoning becomes a turn of its own before it
    call = {"messages": [{"role": "user", "content": "u"}, {**ROW["messages"][3], "reasoning": "R", "loss": True}]}
    assert template_input(call, family)["messages"][1:] == [
        {"role": "assistant", "content": "<think>R</think>", "loss": True},
        {"role": "assistant", "metadata": "get_weather", "content": '{"city": "北京", "days": 2}', "loss": True},
    ]
    with pytest.raises(ValueError, match="reasoning must be one of text, drop"):
        template_input(ROW, family, reasoning="keep")  # type: ignore[arg-type]


def test_glm4_0414_input_takes_tools_as_a_variable():
    shaped = template_input(ROW, FAMILIES["glm-4-0414"], reasoning="drop")
    assert shaped["tools"] == [WEATHER]
    assert [m["role"] for m in shaped["messages"]] == ["user", "assistant", "assistant", "observation"] * 1 + [
        "assistant",
        "observation",
        "assistant",
    ]
    assert all("tools" not in m for m in shaped["messages"])
    kept = {"messages": [{"role": "system", "content": "S", "tools": [WEATHER]}, {"role": "user", "content": "u"}]}
    assert template_input(kept, FAMILIES["glm-4-0414"])["messages"][0] == {"role": "system", "content": "S"}
    assert "tools" not in template_input({"messages": ROW["messages"][1:]}, FAMILIES["glm-4-0414"])


def test_glm45_input_is_openai_style():
    shaped = template_input(ROW, FAMILIES["glm-4.5"])
    assert shaped["tools"] == [WEATHER]
    assert shaped["messages"] == [
        {"role": "user", "content": "北京天气?"},
        {
            "role": "assistant",
            "content": "我查一下。",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京", "days": 2}}}
            ],
            "reasoning_content": "要调用工具",
        },
        {"role": "tool", "content": '{"t": 20}'},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "上海"}}}],
        },
        {"role": "tool", "content": '{"t": 25}'},
        {"role": "assistant", "content": "北京 20 度，上海 25 度。", "reasoning_content": "比较"},
    ]
    dropped = template_input(ROW, FAMILIES["glm-4.5"], reasoning="drop")["messages"]
    assert all("reasoning_content" not in m for m in dropped)


def test_glm45_input_groups_calls_of_one_turn_only():
    call = {"role": "assistant", "metadata": "get_weather", "content": "{}"}
    row = {
        "messages": [
            {"role": "user", "content": "u"},
            call,
            call,  # joins the one before
            {**call, "reasoning": "R"},  # its own reasoning: a new message
            {**call, "loss": False},  # joins it: loss flags never change the text
            {"role": "assistant", "content": "text", "loss": False},  # text: a new message
            {**call, "loss": False},
            {"role": "assistant", "content": "more"},
        ]
    }
    shaped = template_input(row, FAMILIES["glm-4.5"])["messages"]
    assert [len(m.get("tool_calls", ())) for m in shaped] == [0, 2, 2, 1, 0]
    assert shaped[2]["reasoning_content"] == "R"
    assert shaped[2]["loss"] is True  # one part trained (the role default), one not: trained as a whole
    assert shaped[3]["loss"] is False  # both parts say false


def test_glm45_input_names_a_call_whose_arguments_are_not_an_object():
    row = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "metadata": "f", "content": "[1]"}]}
    with pytest.raises(ValueError, match=r"messages\[1\]: the arguments of the call to 'f' are not a JSON object"):
        template_input(row, FAMILIES["glm-4.5"])


# --- rendering: parity with apply_chat_template ---------------------------------------------------


def test_hand_examples_render_as_expected():
    glm45 = render(ROW["messages"], template="glm-4.5")
    assert glm45.endswith(
        "<|user|>\n北京天气?<|assistant|>\n<think>要调用工具</think>\n我查一下。\n<tool_call>get_weather\n"
        "<arg_key>city</arg_key>\n<arg_value>北京</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n"
        '</tool_call><|observation|>\n<tool_response>\n{"t": 20}\n</tool_response><|assistant|>\n<think></think>\n'
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>上海</arg_value>\n</tool_call><|observation|>\n"
        '<tool_response>\n{"t": 25}\n</tool_response><|assistant|>\n<think>比较</think>\n北京 20 度，上海 25 度。'
    )
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in glm45
    glm0414 = render(ROW["messages"], template="glm-4-0414", reasoning="drop")
    assert glm0414.startswith("[gMASK]<sop><|system|>\n# 可用工具\n\n## get_weather\n\n{\n")
    assert '<|assistant|>get_weather \n{"city": "北京", "days": 2}<|observation|>' in glm0414


def shared_rows() -> list[dict]:
    """Every converted row of every dataset in ../shared/data, in both call styles."""
    return [
        r.row
        for style in ("native", "json")
        for path in SHARED_DATA_FILES
        for r in convert_file(path, Options(call_style=style))
        if r.row is not None
    ]


@lru_cache(maxsize=1)
def cached_shared_rows() -> tuple[dict, ...]:
    return tuple(shared_rows())


#: Rows compared per family in test_every_shared_row_renders_like_apply_chat_template (README.md).
SHARED_ROWS_PER_FAMILY = 6780


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_shared_row_renders_like_apply_chat_template(name):
    family = FAMILIES[name]
    training = load_template(family.training_template)
    rows = cached_shared_rows()
    mismatched = []
    for index, row in enumerate(rows):
        for flag in (False, True):
            ours = render(row["messages"], template=name, add_generation_prompt=flag)
            if ours != hf_render(family, row, flag):
                mismatched.append((index, flag))
            if render(row["messages"], template=training, add_generation_prompt=flag) != ours:
                mismatched.append((index, flag, "training variant"))
    assert not mismatched, f"{len(mismatched)} of {len(rows)} rows differ, first: {mismatched[:5]}"
    assert len(rows) == SHARED_ROWS_PER_FAMILY


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("name", ["glm-4-9b-chat", "glm-4-9b-chat-v2"])
def test_glm4_chat_spans_are_the_training_variants_blocks_on_every_shared_row(name):
    """glm-4-9b-chat's spans are read off the pieces of one render (faster); the training variant's
    generation blocks give the same spans: a copy of it one comment off is a custom template with
    markers, whose spans come from its blocks."""
    marked = Template(load_template(f"{name}.generation").text + "{# custom #}", "marked")
    assert marked.has_generation_markers and family_of(marked) is None
    for row in cached_shared_rows():
        for train_on in ("assistant", "last", "all"):
            assert _spans(row["messages"], train_on, name) == _spans(row["messages"], train_on, marked)


def _spans(messages, train_on, template):
    try:
        return render_spans(messages, train_on=train_on, template=template)
    except NothingToTrain:
        return None


# --- generated conversations ---------------------------------------------------------------------


@st.composite
def rows(draw, *, loss_flags: bool = True):
    """An internal row as convert writes it: an optional system message (tools, possibly with
    empty content), user turns, assistant answers with or without reasoning, native calls (several
    in a turn: parallel calls become call, result, call, result), text before a call in the same
    turn, results, multi-turn, a second system message, and loss flags."""
    messages = []
    tools = draw(st.one_of(st.none(), tools_lists.filter(bool)))
    if tools is not None or draw(st.booleans()):
        system = {"role": "system", "content": draw(st.one_of(st.just(""), any_text.filter(str.strip)))}
        if tools is not None:
            system["tools"] = tools
        elif not system["content"]:
            system["content"] = "S"
        messages.append(system)
    tool_names = [t["function"]["name"] for t in tools or [] if t["type"] == "function"] or ["get_weather"]
    text = any_text.filter(str.strip)
    reasoning = st.one_of(st.none(), st.none(), text)

    def assistant(content):
        message = {"role": "assistant", "content": content}
        thought = draw(reasoning)
        if thought is not None:
            message["reasoning"] = thought
        return message

    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            messages.append({"role": "system", "content": draw(text)})
        calls = draw(st.integers(0, 3))
        if calls and draw(st.booleans()):
            messages.append(assistant(draw(text)))  # text, then the calls, in one turn
        for _ in range(calls):
            arguments = draw(st.dictionaries(names, json_values, max_size=3))
            call = assistant(json.dumps(arguments, ensure_ascii=False))
            call["metadata"] = draw(st.sampled_from(tool_names))
            messages.append(call)
            messages.append({"role": "observation", "content": draw(text)})
        if draw(st.integers(0, 4)):
            messages.append(assistant(draw(text)))
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(text)})
    if loss_flags:
        for message in messages:
            flag = draw(st.sampled_from([None, None, None, None, True, False]))
            if flag is not None:
                message["loss"] = flag
    return {"messages": messages}


@given(rows(), st.booleans(), st.sampled_from(["text", "drop"]))
@hypothesis_settings
def test_generated_rows_render_like_apply_chat_template(row, add_generation_prompt, reasoning):
    for name, family in FAMILIES.items():
        shaped = template_input(row, family, reasoning=reasoning)
        expected = tiny().apply_chat_template(
            shaped["messages"],
            tools=shaped.get("tools"),
            chat_template=load_template(name).text,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        for template in (name, family.training_template):
            ours = render(row["messages"], template=template, add_generation_prompt=add_generation_prompt)
            if reasoning == "text":
                assert ours == expected, (name, template)
            assert (
                render(
                    row["messages"], template=template, add_generation_prompt=add_generation_prompt, reasoning=reasoning
                )
                == expected
            ), (name, template)


# --- trained spans --------------------------------------------------------------------------


def trained(messages, template, **options):
    text, spans = render_spans(messages, template=template, **options)
    return text, [text[a:b] for a, b in spans]


def test_glm45_trains_each_turn_through_its_end_tag():
    text, pieces = trained(ROW["messages"], "glm-4.5")
    assert text == render(ROW["messages"], template="glm-4.5") + "<|user|>"
    assert pieces == [
        # all after the (only) user message: every think block is trained, empty or not
        "\n<think>要调用工具</think>\n我查一下。\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>北京</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call><|observation|>",
        "\n<think></think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>上海</arg_value>\n"
        "</tool_call><|observation|>",
        "\n<think>比较</think>\n北京 20 度，上海 25 度。<|user|>",
    ]


def test_glm45_does_not_train_the_think_block_it_hides():
    messages = [
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "A", "reasoning": "hidden"},
        {"role": "user", "content": "2"},
        {"role": "assistant", "metadata": "f", "content": '{"x": [1, true]}', "reasoning": "R"},
    ]
    text, pieces = trained(messages, "glm-4.6")
    assert "hidden" not in text and "<|assistant|>\n<think></think>\nA<|user|>" in text
    # the last turn ends with a call: GLM-4.5 stops on <|observation|>
    assert text.endswith("</tool_call><|observation|>")
    assert pieces == [
        "\nA<|user|>",
        "\n<think>R</think>\n<tool_call>f\n<arg_key>x</arg_key>\n<arg_value>[1, true]</arg_value>\n</tool_call>"
        "<|observation|>",
    ]
    assert trained(messages, "glm-4.6", train_on="last")[1] == pieces[-1:]
    text_all, spans = render_spans(messages, template="glm-4.6", train_on="all")
    assert text_all == text and spans == [(0, len(text))]


def test_loss_flags_in_every_family():
    messages = [
        {"role": "system", "content": "S", "loss": True},
        {"role": "user", "content": "U", "loss": True},
        {"role": "assistant", "content": "A", "loss": False},
        {"role": "user", "content": "V"},
        {"role": "assistant", "content": "B"},
    ]
    expected = {
        "glm-4-9b-chat": ["\nS<|user|>", "\nU<|assistant|>", "\nB<|user|>"],
        "glm-4-0414": ["\nS<|user|>", "\nU<|assistant|>", "\nB<|user|>"],
        "glm-4.5": ["\nS<|user|>", "\nU<|assistant|>", "\n<think></think>\nB<|user|>"],
    }
    for name, pieces in expected.items():
        assert trained(messages, name)[1] == pieces, name
        assert trained(messages, name, train_on="last")[1] == pieces[-1:], name
    only_off = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A", "loss": False}]
    for name in FAMILIES:
        with pytest.raises(NothingToTrain):
            render_spans(only_off, template=name)


@given(rows(), st.sampled_from(["assistant", "last", "all"]))
@hypothesis_settings
def test_spans_are_ordered_and_end_on_tags(row, train_on):
    tag = re.compile(r"<\|(user|assistant|system|observation)\|>$")
    for name in FAMILIES:
        try:
            text, spans = render_spans(row["messages"], template=name, train_on=train_on)
        except NothingToTrain:
            assert train_on != "all"
            continue
        assert text.startswith(render(row["messages"], template=name))
        assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
        if train_on != "all":
            assert all(tag.search(text, 0, b) for _, b in spans), name
            assert len(spans) == 1 or train_on == "assistant"


# --- token masks -------------------------------------------------------------------------------


def transformers_masks(family: Family, row: dict) -> tuple[list[int], list[int]]:
    shaped = template_input(row, family)
    out = tiny().apply_chat_template(
        shaped["messages"],
        tools=shaped.get("tools"),
        chat_template=load_template(family.training_template).text,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    return out["input_ids"], out["assistant_masks"]


def assert_masks_agree(name: str, row: dict) -> None:
    """Our masks equal transformers' from the training variant on the rendered text (ours also
    cover the appended end tag). transformers maps a block's last character to its FIRST token,
    so where that character is split over several byte tokens the later ones are missing from its
    mask: the only difference allowed."""
    family = FAMILIES[name]
    try:
        ours = tokenize(row["messages"], tiny(), template=name)
    except NothingToTrain:
        return
    ids, theirs = transformers_masks(family, row)
    assert ours["input_ids"][: len(ids)] == ids and len(ours["input_ids"]) == len(ids) + 1
    text, spans = render_spans(row["messages"], template=name)
    offsets = tiny()(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for i, (mine, hf) in enumerate(zip(ours["assistant_masks"], theirs, strict=False)):
        if mine != hf:
            assert mine == 1 and hf == 0 and i > 0 and offsets[i] == offsets[i - 1], (name, i, offsets[i])
    assert ours["assistant_masks"][-1] == int(spans[-1][1] == len(text))  # the appended end tag


@given(rows())
@hypothesis_settings
def test_generated_masks_agree_with_return_assistant_tokens_mask(row):
    for name in FAMILIES:
        assert_masks_agree(name, row)


def test_hand_example_masks_agree():
    for name in FAMILIES:
        assert_masks_agree(name, ROW)


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("name", ["glm-4-0414", *TOOL_CALLS_FAMILIES])
def test_shared_rows_masks_agree_with_return_assistant_tokens_mask(name):
    rows = cached_shared_rows()[::10]  # transformers' masks cost an offsets pass per row
    for row in rows:
        assert_masks_agree(name, row)


# --- the commands --------------------------------------------------------------------------------

SAMPLE = REPO / "data" / "glaive_toolcall_zh_sample.json"


def sample_rows() -> list[dict]:
    return [r.row for r in convert_file(SAMPLE, Options()) if r.ok and r.row is not None]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_render_command_renders_with_each_family(runner, name):
    from glmdata.cli import app

    row = sample_rows()[1]
    result = runner.invoke(app, ["render", str(SAMPLE), "--row", "1", "--raw", "--template", name])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == render_spans(row["messages"], template=name).text
    args = ["render", str(SAMPLE), "--row", "1", "--raw", "--generation-prompt", "--template", name]
    generation = runner.invoke(app, args)
    assert generation.exit_code == 0, generation.stderr
    assert generation.stdout == render(row["messages"], template=name, add_generation_prompt=True)


def test_reasoning_option_of_the_commands(runner):
    from glmdata.cli import app

    reasoning = REPO / "data" / "reason_tool_use_demo_50.jsonl"
    rows = [r.row for r in convert_file(reasoning, Options()) if r.ok and r.row is not None]
    index = next(i for i, row in enumerate(rows) if any(m.get("reasoning") for m in row["messages"]))
    messages = rows[index]["messages"]
    for option, expected in (("text", "<think>"), ("drop", None)):
        result = runner.invoke(app, ["render", str(reasoning), "--row", str(index), "--raw", "--reasoning", option])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == render_spans(messages, reasoning=option).text
        assert (expected in result.stdout) if expected else ("<think>" not in result.stdout)
    bad = runner.invoke(app, ["render", str(reasoning), "--raw", "--reasoning", "keep"])
    assert bad.exit_code == 2 and "--reasoning must be one of text, drop, not 'keep'" in bad.stderr


def test_stats_command_counts_glm45_call_turns(runner):
    from glmdata.cli import app

    out = {}
    for name in ("glm-4-9b-chat", "glm-4.5"):
        result = runner.invoke(app, ["stats", str(SAMPLE), "--template", name, "--json"])
        assert result.exit_code in (0, 1), result.stderr
        out[name] = json.loads(result.stdout)["loss_audit"]["trained_by_turn_kind"]
    assert out["glm-4.5"]["tool-call turns"] > 0 and out["glm-4.5"]["assistant text turns"] > 0
    assert set(out["glm-4.5"]) == set(out["glm-4-9b-chat"])


def test_tokenize_command_with_glm45_records_template_and_reasoning(runner, tmp_path):
    pytest.importorskip("pyarrow")
    from glmdata import tokenized
    from glmdata.cli import app
    from glmdata.tokenizer import load_tokenizer

    tiny().save_pretrained(str(tmp_path / "tok"))
    out = tmp_path / "train.parquet"
    args = [str(SAMPLE), "--tokenizer", str(tmp_path / "tok"), "-o", str(out), "--template", "glm-4.5"]
    result = runner.invoke(app, ["tokenize", *args, "--reasoning", "drop"])
    assert result.exit_code in (0, 1), result.stderr  # the sample keeps broken rows on purpose
    made = tokenized.read_provenance(out)
    assert made is not None and made.reasoning == "drop" and made.template_name == "glmdata:glm-4.5"
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    loaded = load_tokenizer(tmp_path / "tok")
    rows = {r.index: r.row for r in convert_file(SAMPLE, Options()) if r.ok and r.row is not None}
    for written in table:
        messages = rows[written["row"]]["messages"]
        assert written["labels"] == tokenize(messages, loaded, template="glm-4.5", reasoning="drop")["labels"]
    expected = tokenized.provenance(loaded, load_template("glm-4.5"), "assistant", None, reasoning="text")
    assert made.same_tokens_as(expected) == ["reasoning"]


def transformers_blocks(family: Family, row: dict) -> tuple[str, list[tuple[int, int]]]:
    """The training variant's text and generation blocks, as transformers computes them."""
    from transformers.utils.chat_template_utils import render_jinja_template

    shaped = template_input(row, family)
    chats, indices = render_jinja_template(
        [[{k: v for k, v in m.items() if v is not None} for m in shaped["messages"]]],
        tools=shaped.get("tools"),
        chat_template=load_template(family.training_template).text,
        return_assistant_tokens_mask=True,
    )
    return chats[0], indices[0]


def union(spans) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


@given(rows())
@hypothesis_settings
def test_spans_are_the_generation_blocks_transformers_finds(row):
    """Character for character: the trained spans cover exactly transformers' generation blocks
    of the training variant, plus the appended end tag of a last turn that is trained."""
    for name, family in FAMILIES.items():
        chat, blocks = transformers_blocks(family, row)
        try:
            text, spans = render_spans(row["messages"], template=name)
        except NothingToTrain:
            assert not union(blocks), name
            continue
        assert text.startswith(chat)
        assert union((a, min(b, len(chat))) for a, b in spans) == union(blocks), name


DATA_FILES = sorted(p for p in (REPO / "data").iterdir() if p.suffix in (".json", ".jsonl"))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_shipped_sample_renders_like_apply_chat_template(name):
    """The samples shipped with the repository (every input format, a reasoning tool-use set),
    converted: the same parity, from the repository alone."""
    family = FAMILIES[name]
    training = load_template(family.training_template)
    compared = 0
    for path in DATA_FILES:
        for result in convert_file(path, Options()):
            if result.row is None:
                continue
            compared += 1
            for flag in (False, True):
                ours = render(result.row["messages"], template=name, add_generation_prompt=flag)
                assert ours == hf_render(family, result.row, flag), (path.name, result.index, flag)
                assert render(result.row["messages"], template=training, add_generation_prompt=flag) == ours
    assert compared > 100


def test_loss_flags_never_change_the_text_of_a_turn():
    messages = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "let me look", "loss": True},
        {"role": "assistant", "metadata": "f", "content": '{"a": 1}', "loss": False},
    ]
    # one turn whatever its flags say: trained as a whole (one part is), and the whole is the last
    assert len(template_input({"messages": messages}, FAMILIES["glm-4.5"])["messages"]) == 2
    [piece] = trained(messages, "glm-4.5", train_on="last")[1]
    assert piece.startswith("\n<think></think>\nlet me look\n<tool_call>f") and piece.endswith("<|observation|>")
    assert trained(messages, "glm-4.5")[1] == [piece]
    off = [messages[0], *({**m, "loss": False} for m in messages[1:])]
    assert trained(off, "glm-4.5", train_on="last")[1] == [piece]
    with pytest.raises(NothingToTrain):
        render_spans(off, template="glm-4.5")
