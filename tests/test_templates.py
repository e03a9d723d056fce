"""Packaged templates by name: official bytes, training variants, parity with transformers, identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_render import DATA_FILES, SHARED, SHARED_DATA_FILES, hf_render, shared_rows, tiny
from tiny_tokenizer import FIXTURES, conversations

from glmdata.families import FAMILIES, template_input
from glmdata.render import KNOWN_TEMPLATES, known_template, load_template, render

# name -> the official text it must equal byte for byte (fixture copies of ../shared/templates)
OFFICIAL = {
    "glm-4-9b-chat": (FIXTURES / "glm-4-9b-chat.v1.jinja").read_bytes().decode("utf-8"),
    "glm-4-9b-chat-v2": (FIXTURES / "glm-4-9b-chat.v2.jinja").read_bytes().decode("utf-8"),
    "glm-4-0414": (FIXTURES / "glm-4-9b-0414.jinja").read_bytes().decode("utf-8"),
    "glm-4.5": (FIXTURES / "glm-4.5.jinja").read_bytes().decode("utf-8"),
    "glm-4.6": (FIXTURES / "glm-4.6.jinja").read_bytes().decode("utf-8"),
}
# The templates that read the row itself (tools on the system message): parity here renders the
# row with transformers as is. The other families read glmdata.families.template_input of the
# row: their parity is in tests/test_families.py.
SHIPPED = [
    (name, variant)
    for name in KNOWN_TEMPLATES
    if FAMILIES[name].tools == "system"
    for variant in (name, KNOWN_TEMPLATES[name])
]
ROW_FILES = DATA_FILES + SHARED_DATA_FILES


def shaped(messages, name):
    """The messages the template reads: the row's own, with reasoning as text (template_input)."""
    return template_input({"messages": messages}, FAMILIES[name])["messages"]


def test_every_known_name_is_official_text_with_a_training_variant():
    assert set(KNOWN_TEMPLATES) == set(OFFICIAL)
    for name, training in KNOWN_TEMPLATES.items():
        assert load_template(name).text == OFFICIAL[name]
        assert load_template(f"{name}.jinja").text == OFFICIAL[name]
        assert load_template(training).has_generation_markers
        assert not load_template(name).has_generation_markers


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared not present")
def test_v2_is_the_template_the_shared_tokenizer_carries():
    assert load_template("glm-4-9b-chat-v2").text == (SHARED / "templates" / "glm-4-9b-chat.v2.jinja").read_text(
        encoding="utf-8"
    )
    assert known_template(load_template(SHARED / "tokenizer" / "glm-4-9b-chat")) == "glm-4-9b-chat-v2"


@pytest.mark.parametrize(("name", "variant"), SHIPPED)
@pytest.mark.parametrize("path", ROW_FILES, ids=[p.name for p in ROW_FILES])
def test_parity_on_every_converted_row(path: Path, name, variant):
    rows = shared_rows(path)
    assert rows
    tokenizer = tiny()
    mismatched = [
        (index, flag)
        for index, messages in enumerate(rows)
        for flag in (False, True)
        if render(messages, add_generation_prompt=flag, template=variant)
        != hf_render(tokenizer, shaped(messages, name), flag, chat_template=OFFICIAL[name])
    ]
    assert not mismatched, f"{len(mismatched)} of {len(rows)} rows differ, first: {mismatched[:5]}"


@given(conversations(), st.booleans(), st.sampled_from(SHIPPED))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parity_on_generated_conversations(messages, add_generation_prompt, shipped):
    name, variant = shipped
    expected = hf_render(tiny(), messages, add_generation_prompt, chat_template=OFFICIAL[name])
    assert render(messages, add_generation_prompt=add_generation_prompt, template=variant) == expected
    # transformers renders the training variant's own text to the same bytes
    training = load_template(KNOWN_TEMPLATES[name]).text
    assert hf_render(tiny(), messages, add_generation_prompt, chat_template=training) == expected


def test_identity_finds_each_official_text_and_refuses_modified_ones():
    for name, training in KNOWN_TEMPLATES.items():
        assert known_template(OFFICIAL[name]) == name
        assert known_template(load_template(training)) == name
        for text in (OFFICIAL[name], load_template(training).text):
            assert known_template(text + "\n") is None
            assert known_template(text.replace("<|assistant|>", "<|assistant|> ", 1)) is None
            assert known_template(text.replace("{%", "{%-", 1)) is None
    assert known_template((FIXTURES / "glm-4-9b-0414.jinja").read_text(encoding="utf-8")) == "glm-4-0414"


def test_check_template_names_a_known_template_and_uses_it(tmp_path, capsys):
    from glmdata.cli.render import Selection, compare_templates
    from glmdata.convert import Options

    sample = DATA_FILES[0]
    (tmp_path / "chat_template.jinja").write_text(OFFICIAL["glm-4-9b-chat-v2"], encoding="utf-8", newline="")
    assert compare_templates(Selection(str(sample), Options(), 0, None, False), load_template(), str(tmp_path)) == 0
    assert "is the known template glm-4-9b-chat-v2" in capsys.readouterr().err.replace("\n", " ")
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    compare_templates(Selection(str(sample), Options(), 0, None, False), load_template(), str(tmp_path))
    err = " ".join(capsys.readouterr().err.split())
    assert f"not a known template (known: {', '.join(KNOWN_TEMPLATES)})" in err
    assert "--template NAME" in err


def test_install_template_writes_a_known_template_as_the_variant_asked_for(tmp_path):
    from glmdata.render import install_template

    (tmp_path / "chat_template.jinja").write_text(OFFICIAL["glm-4-9b-chat-v2"], encoding="utf-8", newline="")
    install_template(tmp_path)  # the default is v1, whatever the directory held
    assert load_template(tmp_path).text == load_template("glm-4-9b-chat.generation").text
    install_template(tmp_path, template="glm-4-9b-chat-v2")
    assert load_template(tmp_path).text == load_template("glm-4-9b-chat-v2.generation").text
    install_template(tmp_path, training=False, template=load_template("glm-4-9b-chat-v2.generation"))
    assert load_template(tmp_path).text == OFFICIAL["glm-4-9b-chat-v2"]
    install_template(tmp_path, template="glm-4-9b-chat")  # a known name is written as the variant asked for
    assert load_template(tmp_path).text == load_template("glm-4-9b-chat.generation").text


@pytest.mark.parametrize("path", ROW_FILES, ids=[p.name for p in ROW_FILES])
def test_v2_spans_match_its_generation_markers_and_v1_spans(path):
    from test_render import generation_indices, merged

    from glmdata.render import NothingToTrain, render_spans

    training = load_template("glm-4-9b-chat-v2.generation").text
    for messages in shared_rows(path):
        try:
            v1 = render_spans(messages)
        except NothingToTrain:
            with pytest.raises(NothingToTrain):
                render_spans(messages, template="glm-4-9b-chat-v2")
            continue
        v2 = render_spans(messages, template="glm-4-9b-chat-v2")
        assert v2.text == v1.text.replace("名为 ChatGLM 的", "名为 GLM-4 的")
        assert len(v2.spans) == len(v1.spans)
        text, indices = generation_indices(training, shaped(messages, "glm-4-9b-chat-v2"))
        assert merged(indices) == merged((s, min(e, len(text))) for s, e in v2.spans)
        assert render_spans(messages, template="glm-4-9b-chat-v2.generation") == v2
