"""glmdata.masks: token labels = the official GLM-4 finetune demo's, spans covered exactly, ids and
labels those of encoding the whole text."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from itertools import accumulate
from unittest import mock

import pytest
from conftest import DATA, SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_tokenizer import GLM4_PAT_STR, OFFICIAL_TEMPLATE, build_tiny_tokenizer, conversations, write_tiktoken_dir

from glmdata.masks import (
    GLM4_CONTROL_TOKENS,
    IGNORE_INDEX,
    MaskError,
    TruncationReport,
    encode_batch,
    encode_rendered,
    token_spans,
    tokenize,
    tokenize_batch,
    truncation_report,
)
from glmdata.render import GENERATION_TEMPLATE, NothingToTrain, Rendered, load_template, render_spans
from glmdata.tokenizer import load_tokenizer, tiktoken_encoding

GLM4_DIR = SHARED / "tokenizer" / "glm-4-9b-chat"
SHARED_DATA_FILES = sorted((SHARED / "data").rglob("*.json")) if (SHARED / "data").is_dir() else []
SAMPLE_FILES = sorted(p for p in DATA.iterdir() if p.suffix in (".json", ".jsonl"))
needs_glm4 = pytest.mark.skipif(not GLM4_DIR.is_dir(), reason="../shared/tokenizer/glm-4-9b-chat not present")
hypothesis_settings = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GMASK, SOP, SYSTEM, USER, ASSISTANT, OBSERVATION = 151331, 151333, 151335, 151336, 151337, 151338
X = IGNORE_INDEX


@lru_cache(maxsize=1)
def tiny():
    return build_tiny_tokenizer(OFFICIAL_TEMPLATE)


@lru_cache(maxsize=1)
def glm4():
    return load_tokenizer(GLM4_DIR)


def demo_process_batch(tokenizer, conversation, combine=False):
    """The official demo's ``process_batch`` for one conversation (GLM-4 ``finetune_demo/finetune.py``,
    commit a3e59fb9), with the official template and no truncation."""
    if combine:
        input_ids = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=False, chat_template=OFFICIAL_TEMPLATE
        )
        loss_masks = [False] * len(input_ids)
        last_assistant_index = len(input_ids) - input_ids[::-1].index(ASSISTANT) - 1
        for j in range(last_assistant_index + 1, len(input_ids)):
            loss_masks[j] = True
    else:
        input_ids = [GMASK, SOP]
        loss_masks = [False, False]
        for message in conversation:
            loss_mask_val = message["role"] not in ("system", "user", "observation")
            new_input_ids = tokenizer.apply_chat_template(
                [message], tokenize=True, return_dict=False, chat_template=OFFICIAL_TEMPLATE
            )[2:]
            input_ids += new_input_ids
            loss_masks += [loss_mask_val] * len(new_input_ids)
    input_ids.append(USER)  # EOS for chat
    loss_masks = [False, *loss_masks]
    labels = [token if mask else X for token, mask in zip(input_ids, loss_masks, strict=True)]
    return input_ids, labels


# --- a hand-checked example --------------------------------------------------------------------

EXAMPLE = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "metadata": "f", "content": "{}"},
    {"role": "observation", "content": "1"},
    {"role": "assistant", "content": "ok"},
]
# Written out by hand as (token, id, label). Tiny tokenizer: one token per byte, id = byte value.
EXAMPLE_TABLE = [
    ("[gMASK]", GMASK, X),
    ("<sop>", SOP, X),
    ("<|user|>", USER, X),
    ("\n", 10, X),
    ("h", 104, X),
    ("i", 105, X),
    ("<|assistant|>", ASSISTANT, X),  # the tag that opens the turn: not trained
    ("f", 102, 102),  # the tool-name line of the native call
    ("\n", 10, 10),
    ("{", 123, 123),
    ("}", 125, 125),
    ("<|observation|>", OBSERVATION, OBSERVATION),  # the tag that ends the turn: trained
    ("\n", 10, X),
    ("1", 49, X),
    ("<|assistant|>", ASSISTANT, X),
    ("\n", 10, 10),
    ("o", 111, 111),
    ("k", 107, 107),
    ("<|user|>", USER, USER),  # appended after the conversation ("EOS for chat"): trained
]
EXAMPLE_IDS = [token_id for _, token_id, _ in EXAMPLE_TABLE]
EXAMPLE_LABELS = [label for _, _, label in EXAMPLE_TABLE]


def test_hand_checked_example():
    out = tokenize(EXAMPLE, tiny())
    assert [tiny().decode([token_id]) for token_id in out["input_ids"]] == [token for token, _, _ in EXAMPLE_TABLE]
    assert out["input_ids"] == EXAMPLE_IDS
    assert out["labels"] == EXAMPLE_LABELS
    assert out["assistant_masks"] == [int(label != X) for label in EXAMPLE_LABELS]
    assert (out["input_ids"], out["labels"]) == demo_process_batch(tiny(), EXAMPLE)


def test_hand_checked_example_last_and_all():
    last = tokenize(EXAMPLE, tiny(), train_on="last")
    assert last["labels"] == [X] * 15 + [10, 111, 107, USER]
    # The demo's combine mode shifts its mask twice: it also drops the "\n" after the last tag.
    _, combine_labels = demo_process_batch(tiny(), EXAMPLE, combine=True)
    assert combine_labels == [X] * 16 + [111, 107, USER]
    everything = tokenize(EXAMPLE, tiny(), train_on="all")
    assert everything["labels"] == EXAMPLE_IDS
    assert everything["assistant_masks"] == [1] * len(EXAMPLE_IDS)


def test_loss_flags_train_other_roles_and_untrain_assistants():
    row = [
        {"role": "user", "content": "a", "loss": True},
        {"role": "assistant", "content": "b", "loss": False},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    out = tokenize(row, tiny())
    # [gMASK] <sop> <|user|> \n a <|assistant|> \n b <|user|> \n c <|assistant|> \n d <|user|>
    assert out["input_ids"] == [GMASK, SOP, USER, 10, 97, ASSISTANT, 10, 98, USER, 10, 99, ASSISTANT, 10, 100, USER]
    assert out["labels"] == [X, X, X, 10, 97, ASSISTANT, X, X, X, X, X, X, 10, 100, USER]


def test_max_length_cuts_all_columns():
    out = tokenize(EXAMPLE, tiny(), max_length=9)
    assert out["input_ids"] == EXAMPLE_IDS[:9]
    assert out["labels"] == EXAMPLE_LABELS[:9]
    assert len(out["assistant_masks"]) == 9


def test_truncation_report():
    assert truncation_report(EXAMPLE, tiny(), None) == TruncationReport(19, 9, None, False, 0, 0, False)
    assert truncation_report(EXAMPLE, tiny(), 19) == TruncationReport(19, 9, 19, False, 0, 0, False)
    # Cut between "\n" and "{" of the tool call: inside a trained turn.
    report = truncation_report(EXAMPLE, tiny(), 9)
    assert report == TruncationReport(19, 9, 9, True, 10, 7, True)
    assert report.trained_tokens_kept == 2
    # Cut right after <|observation|>, the end of the first trained turn: not inside it.
    assert truncation_report(EXAMPLE, tiny(), 12) == TruncationReport(19, 9, 12, True, 7, 4, False)
    # Cut inside the untrained observation turn.
    assert truncation_report(EXAMPLE, tiny(), 13).cut_inside_trained_turn is False


def test_truncation_report_consecutive_trained_turns():
    row = [
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    # ... <|assistant|> \n a <|assistant|> | \n b <|user|>: the cut falls between two trained turns.
    out = tokenize(row, tiny())
    cut = out["input_ids"].index(ASSISTANT, 6) + 1
    assert out["labels"][cut - 1] != X and out["labels"][cut] != X
    assert truncation_report(row, tiny(), cut).cut_inside_trained_turn is False
    assert truncation_report(row, tiny(), cut + 1).cut_inside_trained_turn is True


def test_nothing_to_train_is_raised():
    with pytest.raises(NothingToTrain):
        tokenize([{"role": "user", "content": "u"}], tiny())


# --- properties --------------------------------------------------------------------------------


def assert_masks_match_spans(tokenizer, rendered: Rendered, out: dict) -> None:
    """Every trained token lies inside a trained span, and every span is covered by trained tokens."""
    encoding = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoding["input_ids"] == out["input_ids"]
    covered = set()
    for (start, end), label, mask, token in zip(
        encoding["offset_mapping"], out["labels"], out["assistant_masks"], out["input_ids"], strict=True
    ):
        inside = any(a <= start and end <= b for a, b in rendered.spans)
        assert inside == (label != X) == bool(mask)
        if inside:
            assert label == token
            covered.update(range(start, end))
    assert covered == {i for a, b in rendered.spans for i in range(a, b)}


@given(conversations(), st.sampled_from(["assistant", "last", "all"]))
@hypothesis_settings
def test_masks_cover_exactly_the_trained_spans(messages, train_on):
    try:
        rendered = render_spans(messages, train_on=train_on)
    except NothingToTrain:
        return
    assert_masks_match_spans(tiny(), rendered, tokenize(messages, tiny(), train_on=train_on))


@given(conversations(loss_flags=False))
@hypothesis_settings
def test_same_labels_as_the_official_demo(messages):
    try:
        ours = tokenize(messages, tiny())
    except NothingToTrain:
        return
    assert (ours["input_ids"], ours["labels"]) == demo_process_batch(tiny(), messages)


@given(conversations(loss_flags=False, end_with_assistant=True))
@hypothesis_settings
def test_last_is_the_demo_combine_mode_without_its_off_by_one(messages):
    ours = tokenize(messages, tiny(), train_on="last")
    ids, labels = demo_process_batch(tiny(), messages, combine=True)
    assert ours["input_ids"] == ids
    first_answer_token = len(ids) - ids[::-1].index(ASSISTANT)
    assert labels[first_answer_token] == X  # the demo's double shift
    assert ours["labels"][:first_answer_token] + ours["labels"][first_answer_token + 1 :] == (
        labels[:first_answer_token] + labels[first_answer_token + 1 :]
    )
    assert ours["labels"][first_answer_token] == ids[first_answer_token]


def transformers_assistant_masks(tokenizer, messages):
    out = tokenizer.apply_chat_template(
        [{k: v for k, v in m.items() if v is not None} for m in messages],
        chat_template=load_template(GENERATION_TEMPLATE).text,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    return out["input_ids"], out["assistant_masks"]


def assert_consistent_with_transformers(tokenizer, messages):
    """The generation template's masks from apply_chat_template agree with ours on the rendered
    text (ours also covers the appended <|user|>). transformers maps a block's last character to
    its FIRST token, so when that character is split over several byte tokens, the later ones are
    missing from its mask: those are the only differences allowed."""
    ours = tokenize(messages, tokenizer)
    ids, theirs = transformers_assistant_masks(tokenizer, messages)
    assert ours["input_ids"][: len(ids)] == ids and len(ours["input_ids"]) == len(ids) + 1
    encoding = tokenizer(render_spans(messages).text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    for i, (mine, hf) in enumerate(zip(ours["assistant_masks"], theirs, strict=False)):
        if mine != hf:
            assert mine == 1 and hf == 0 and i > 0 and offsets[i] == offsets[i - 1], (i, offsets[i])


@given(conversations())
@hypothesis_settings
def test_generation_template_masks_agree_with_ours(messages):
    try:
        render_spans(messages)
    except NothingToTrain:
        return
    assert_consistent_with_transformers(tiny(), messages)


def test_generation_template_masks_hand_example():
    ids, masks = transformers_assistant_masks(tiny(), EXAMPLE)
    assert ids == EXAMPLE_IDS[:-1]
    assert masks == [int(label != X) for label in EXAMPLE_LABELS[:-1]]


# --- batches -----------------------------------------------------------------------------------


def test_tokenize_batch_matches_tokenize():
    rows = [EXAMPLE, EXAMPLE[:2], [{"role": "user", "content": "长"}, {"role": "assistant", "content": "文本" * 50}]]
    batch = tokenize_batch({"messages": rows}, tiny(), max_length=40)
    assert batch == {
        key: [tokenize(row, tiny(), max_length=40)[key] for row in rows]
        for key in ("input_ids", "labels", "assistant_masks")
    }
    as_json = tokenize_batch(
        {"glm_json": [json.dumps({"messages": r}) for r in rows]}, tiny(), max_length=40, column="glm_json"
    )
    assert as_json == batch


def test_tokenize_batch_names_the_row():
    rows = [EXAMPLE, [{"role": "user", "content": "u"}]]
    with pytest.raises(NothingToTrain, match="row 1 of the batch"):
        tokenize_batch({"messages": rows}, tiny())
    with pytest.raises(ValueError, match="row 0 of the batch"):
        tokenize_batch({"messages": ["{not json"]}, tiny())


def test_tokenize_batch_in_datasets_map():
    datasets = pytest.importorskip("datasets")
    rows = [
        {"messages": EXAMPLE},
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "u", "loss": True},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    dataset = datasets.Dataset.from_list(rows)  # Arrow fills absent keys with None
    assert dataset[0]["messages"][0]["metadata"] is None
    mapped = dataset.map(tokenize_batch, batched=True, fn_kwargs={"tokenizer": tiny()}, remove_columns=["messages"])
    assert mapped["labels"] == [tokenize(r["messages"], tiny())["labels"] for r in rows]


# --- tokenizers that cannot give correct masks -------------------------------------------------


def test_tokenizer_without_glm4_special_tokens_is_refused():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={chr(i): i for i in range(32, 127)} | {"\n": 10}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(GLM4_PAT_STR), behavior="isolated")
    plain = PreTrainedTokenizerFast(tokenizer_object=backend)
    with pytest.raises(MaskError, match=r"\[gMASK\]"):
        tokenize(EXAMPLE, plain)


def test_span_edge_off_a_special_token_is_refused():
    rendered = render_spans(EXAMPLE)
    # A span edge in the middle of the [gMASK] token.
    with pytest.raises(MaskError, match=r"character 3 .*not the edge of a special token"):
        encode_rendered(Rendered(rendered.text, [(3, 20)]), tiny())
    with pytest.raises(MaskError, match="not the edge of a special token"):
        encode_rendered(Rendered(rendered.text, [(0, 3)]), tiny())
    # A role that is not a GLM-4 tag renders as plain text: a turn cannot end on it.
    users = [{"role": "users", "content": "hi", "loss": True}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(MaskError, match=r"^row 1 of the batch: .*not the edge of a special token"):
        tokenize_batch({"messages": [EXAMPLE, users]}, tiny())


def test_slow_tokenizer_is_refused():
    from transformers import ByT5Tokenizer

    with pytest.raises(MaskError, match="ByT5Tokenizer is not a fast tokenizer"):
        tokenize(EXAMPLE, ByT5Tokenizer())


def test_tokenizer_splitting_special_tokens_is_refused():
    tokenizer = build_tiny_tokenizer()
    tokenize(EXAMPLE, tokenizer)
    tokenizer.split_special_tokens = True  # set after a first use: noticed all the same
    with pytest.raises(MaskError, match="split_special_tokens"):
        tokenize(EXAMPLE, tokenizer)


def test_added_token_that_strips_spaces_is_refused():
    from tokenizers import AddedToken

    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([AddedToken("<|extra|>", lstrip=True, normalized=False, special=True)], special_tokens=True)
    with pytest.raises(MaskError, match=re.escape("<|extra|> take the spaces")):
        tokenize(EXAMPLE, tokenizer)


def test_tokenizer_that_encodes_a_text_start_differently(every_row):
    """A SentencePiece-style tokenizer puts "▁" before the first word of a text only, so the text
    after a tag encodes differently alone: masks take the ids of the whole text, right for it too."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁": 1} | {chr(c): i for i, c in enumerate(range(32, 127), 2)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GLM4_CONTROL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert encode("<|user|>hi") != encode("<|user|>") + encode("hi")
    assert_same_as_whole_text(tokenizer, every_row["assistant"])


def test_text_that_a_normalizer_turns_into_a_tag_is_refused():
    """Under NFKC the full-width look-alike "＜｜user｜＞" (kept as text by convert) becomes
    "<|user|>", which this word-level tokenizer's vocabulary holds at the tag's own id."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "\n", "hi", "ok", *GLM4_CONTROL_TOKENS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Split("\n", behavior="isolated")
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in GLM4_CONTROL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    row = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    assert tokenize(row, tokenizer)["labels"] == whole_text_reference(tokenizer, render_spans(row))[1]
    look_alike = [{"role": "user", "content": "＜｜user｜＞"}, {"role": "assistant", "content": "ok"}]
    user_id = tokenizer.convert_tokens_to_ids("<|user|>")
    assert user_id in tokenizer("＜｜user｜＞", add_special_tokens=False)["input_ids"]
    with pytest.raises(MaskError, match="normalizer"):
        tokenize(look_alike, tokenizer)


def test_padding_and_truncation_left_by_an_earlier_call_do_not_apply():
    tokenizer = build_tiny_tokenizer()
    tokenizer(["a", "abc"], padding=True)
    tokenizer("abcdef", truncation=True, max_length=2)
    assert tokenizer.backend_tokenizer.truncation is not None  # left set by the tokenizer's own call
    assert tokenize(EXAMPLE, tokenizer)["input_ids"] == EXAMPLE_IDS
    tokenizer(["a", "abc"], padding=True)
    assert tokenizer.backend_tokenizer.padding is not None
    assert tokenize(EXAMPLE, tokenizer)["input_ids"] == EXAMPLE_IDS


# --- the same ids and labels as encoding the whole text -----------------------------------------
#
# Masks find each tag's token by searching the ids for the tags' ids, with no offsets. The
# reference below is how they were computed before, written plainly: each token labelled by its
# offsets. On every row of every data set, and with each kind of tokenizer, both give the same.


def whole_text_reference(tokenizer, rendered: Rendered) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` from the whole text: tiktoken's ``encode(text, allowed_special="all")``
    with byte offsets summed from the tokens' bytes, else the tokenizer's own call with offsets. A
    token is trained when it lies inside a trained span; one that crosses a span edge raises."""
    text, spans = rendered.text, rendered.spans
    encoding = tiktoken_encoding(tokenizer)
    if encoding is not None:
        ids = encoding.encode(text, allowed_special="all")
        ends = list(accumulate(len(encoding.decode_single_token_bytes(t)) for t in ids))
        offsets = list(zip([0, *ends[:-1]], ends, strict=True))
        spans = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]
    else:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = []
    for token, (start, end) in zip(ids, offsets, strict=True):
        if any(start < edge < end for span in spans for edge in span):
            raise MaskError(f"the token at {start}..{end} crosses a span edge")
        labels.append(token if any(a <= start and end <= b for a, b in spans) else X)
    return ids, labels


@pytest.fixture(scope="session")
def tiny_tiktoken(tmp_path_factory):
    """The tiny tiktoken vocabulary (tiny_tokenizer.write_tiktoken_dir), loaded as glm-4-9b-chat's
    files are: encoded with tiktoken."""
    directory = tmp_path_factory.mktemp("tiny-tiktoken")
    with mock.patch.dict(os.environ, {"GLMDATA_CACHE_DIR": str(directory / "cache")}):
        tokenizer = load_tokenizer(write_tiktoken_dir(directory / "tokenizer"))
    assert tiktoken_encoding(tokenizer) is not None
    return tokenizer


@pytest.fixture(scope="session")
def glm4_tiktoken():
    """glm-4-9b-chat's own files, encoded with tiktoken."""
    if not GLM4_DIR.is_dir():
        pytest.skip("../shared/tokenizer/glm-4-9b-chat not present")
    assert tiktoken_encoding(glm4()) is not None
    return glm4()


@pytest.fixture(scope="session")
def glm4_json_dir(tmp_path_factory, glm4_tiktoken):
    """The same vocabulary saved as a tokenizer.json (the layout of glm-4-9b-chat-hf)."""
    directory = tmp_path_factory.mktemp("glm4-json")
    glm4_tiktoken.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def glm4_json(glm4_json_dir):
    """That tokenizer.json loaded by transformers, not by load_tokenizer: encoded by its tokenizers backend."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(glm4_json_dir))
    assert tiktoken_encoding(tokenizer) is None
    return tokenizer


@pytest.fixture(scope="session")
def glm4_json_tiktoken(glm4_json_dir, tmp_path_factory):
    """That tokenizer.json loaded by load_tokenizer: its byte-level BPE is encoded with tiktoken."""
    with mock.patch.dict(os.environ, {"GLMDATA_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}):
        tokenizer = load_tokenizer(glm4_json_dir)
        assert tiktoken_encoding(tokenizer) is not None
    return tokenizer


@pytest.fixture(scope="session")
def tiny_json():
    return tiny()


def rendered_rows(paths, train_on: str) -> list[Rendered]:
    from glmdata.convert import convert_file

    out = []
    for path in paths:
        for result in convert_file(path):
            if result.row is not None:
                try:
                    out.append(render_spans(result.row["messages"], train_on=train_on))
                except NothingToTrain:
                    pass
    return out


@pytest.fixture(scope="session")
def every_row() -> dict[str, list[Rendered]]:
    """Every row of every data set (data/, and ../shared/data when present), rendered for training."""
    rows = {train_on: rendered_rows(SAMPLE_FILES, train_on) for train_on in ("assistant", "last", "all")}
    rows["shared"] = rendered_rows(SHARED_DATA_FILES, "assistant")
    return rows


def assert_same_as_whole_text(tokenizer, rendered: list[Rendered]) -> None:
    out = encode_batch(rendered, tokenizer)
    differing = []
    for index, (row, r) in enumerate(zip(out, rendered, strict=True)):
        if (row["input_ids"], row["labels"]) != whole_text_reference(tokenizer, r):
            differing.append(index)
        assert row["assistant_masks"] == [int(label != X) for label in row["labels"]]
    assert not differing, f"{len(differing)} of {len(rendered)} rows differ, first: {differing[:5]}"


@pytest.mark.parametrize("kind", ["tiny_json", "tiny_tiktoken", "glm4_tiktoken", "glm4_json"])
@pytest.mark.parametrize("train_on", ["assistant", "last", "all"])
def test_same_as_whole_text_on_every_sample_row(kind, train_on, every_row, request):
    assert len(every_row[train_on]) > 100
    assert_same_as_whole_text(request.getfixturevalue(kind), every_row[train_on])


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("kind", ["glm4_tiktoken", "glm4_json"])
def test_same_as_whole_text_on_every_shared_row(kind, every_row, request):
    assert len(every_row["shared"]) > 3000
    assert_same_as_whole_text(request.getfixturevalue(kind), every_row["shared"])


@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
def test_a_tokenizer_json_encoded_with_tiktoken_gives_its_own_ids_on_every_row(
    glm4_json, glm4_json_tiktoken, every_row
):
    rows = every_row["shared"] + every_row["all"]
    assert encode_batch(rows, glm4_json_tiktoken) == encode_batch(rows, glm4_json)


def test_a_tokenizer_json_encoded_with_tiktoken_gives_its_own_ids_on_any_text(glm4_json, glm4_json_tiktoken):
    encoding, backend = tiktoken_encoding(glm4_json_tiktoken), glm4_json.backend_tokenizer
    parts = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
        ["\n", "\n\n", " ", "  ", "'s", "'LL", "12345", "你好", "。", "<|user|>", "[gMASK]", "\t\r\n", "😀", "\u200b"]
    )

    @given(st.lists(parts, max_size=30).map("".join))
    @settings(max_examples=300, deadline=None)
    def check(text):
        assert encoding.encode(text, allowed_special="all") == backend.encode(text, add_special_tokens=False).ids

    check()


@pytest.mark.parametrize("change", ["none", "a merge dropped", "merges reversed", "a normalizer", "a byte fallback"])
def test_a_tokenizer_json_is_encoded_with_tiktoken_only_when_that_gives_its_ids(change, tiny_tiktoken, tmp_path):
    tiny_tiktoken.save_pretrained(str(tmp_path / "tokenizer"))
    path = tmp_path / "tokenizer" / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    merges = spec["model"]["merges"]
    assert len(merges) > 4
    if change == "a merge dropped":
        del merges[len(merges) // 2]
    elif change == "merges reversed":
        merges.reverse()
    elif change == "a normalizer":
        spec["normalizer"] = {"type": "NFC"}
    elif change == "a byte fallback":
        spec["model"]["byte_fallback"] = True
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    with mock.patch.dict(os.environ, {"GLMDATA_CACHE_DIR": str(tmp_path / "cache")}):
        for _ in range(2):  # the second time from the verdict kept in the cache
            tokenizer = load_tokenizer(tmp_path / "tokenizer")
            assert (tiktoken_encoding(tokenizer) is not None) == (change == "none")
    rendered = [render_spans(m) for m in (EXAMPLE, [{"role": "user", "content": "hello world 'll 123"}, *EXAMPLE])]
    expected = [tokenizer(r.text, add_special_tokens=False)["input_ids"] for r in rendered]
    assert [row["input_ids"] for row in encode_batch(rendered, tokenizer)] == expected


def outcome(fn):
    try:
        return fn()
    except (MaskError, NothingToTrain) as e:
        return type(e).__name__


@pytest.mark.parametrize("kind", ["tiny_json", "tiny_tiktoken", "glm4_tiktoken", "glm4_json"])
def test_same_as_whole_text_on_any_conversation(kind, request):
    """Also with roles that are not GLM-4 tags (span edges inside plain text): there masks refuse
    the row, and encoding the whole text labels it only where no token happens to cross an edge."""
    tokenizer = request.getfixturevalue(kind)

    @given(conversations(), st.sampled_from(["assistant", "last", "all"]), st.sampled_from([None, "users", "tool"]))
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def check(messages, train_on, odd_role):
        if odd_role:
            messages = [{**m, "role": odd_role} if m["role"] == "user" else m for m in messages]
        try:
            rendered = render_spans(messages, train_on=train_on)
        except NothingToTrain:
            return
        ours = outcome(lambda: encode_rendered(rendered, tokenizer))
        reference = outcome(lambda: whole_text_reference(tokenizer, rendered))
        if ours == "MaskError":
            assert odd_role and train_on != "all"
        else:
            assert (ours["input_ids"], ours["labels"]) == reference

    check()


@pytest.mark.parametrize("kind", ["tiny_json", "tiny_tiktoken"])
def test_a_batch_encodes_as_its_rows_alone(kind, request):
    tokenizer = request.getfixturevalue(kind)
    tools = [{"type": "function", "function": {"name": "f", "description": "长" * 300}}]
    rows = [[{"role": "system", "content": "", "tools": tools}, *EXAMPLE], EXAMPLE, [*EXAMPLE, *EXAMPLE]]
    rendered = [render_spans(m) for m in rows * 40]  # enough rows for several threads
    batch = encode_batch(rendered, tokenizer, max_length=50)
    assert batch == [encode_rendered(r, tokenizer, max_length=50) for r in rendered]
    assert token_spans(rendered, tokenizer) == [token_spans([r], tokenizer)[0] for r in rendered]


# --- the real GLM-4 vocabulary (skipped without ../shared) -------------------------------------


# Written out by hand as (token, id, label), with the real glm-4-9b-chat vocabulary.
GLM4_EXAMPLE = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "metadata": "get_weather", "content": '{"a": 1}'},
]
GLM4_EXAMPLE_TABLE = [
    ("[gMASK]", GMASK, X),
    ("<sop>", SOP, X),
    ("<|user|>", USER, X),
    ("\n", 198, X),
    ("hi", 6023, X),
    ("<|assistant|>", ASSISTANT, X),
    ("get", 455, 455),
    ("_weather", 68852, 68852),
    ("\n", 198, 198),
    ('{"', 4913, 4913),
    ("a", 64, 64),
    ('":', 788, 788),
    (" ", 220, 220),
    ("1", 16, 16),
    ("}", 92, 92),
    ("<|user|>", USER, USER),
]


@needs_glm4
def test_glm4_hand_checked_example():
    out = tokenize(GLM4_EXAMPLE, glm4())
    assert [glm4().decode([token_id]) for token_id in out["input_ids"]] == [t for t, _, _ in GLM4_EXAMPLE_TABLE]
    assert out["input_ids"] == [token_id for _, token_id, _ in GLM4_EXAMPLE_TABLE]
    assert out["labels"] == [label for _, _, label in GLM4_EXAMPLE_TABLE]


@needs_glm4
def test_glm4_special_tokens_are_single_ids():
    out = tokenize(EXAMPLE, glm4())
    assert out["input_ids"][:3] == [GMASK, SOP, USER]
    assert out["input_ids"].count(ASSISTANT) == 2 and out["input_ids"][-1] == USER
    assert (out["input_ids"], out["labels"]) == demo_process_batch(glm4(), EXAMPLE)


@needs_glm4
@given(conversations(), st.sampled_from(["assistant", "last", "all"]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_glm4_masks_cover_exactly_the_trained_spans(messages, train_on):
    try:
        rendered = render_spans(messages, train_on=train_on)
    except NothingToTrain:
        return
    assert_masks_match_spans(glm4(), rendered, tokenize(messages, glm4(), train_on=train_on))


@needs_glm4
@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("path", SHARED_DATA_FILES, ids=[p.name for p in SHARED_DATA_FILES])
def test_glm4_same_labels_as_the_official_demo_on_every_shared_row(path):
    from glmdata.convert import convert_file

    rows = [r.row["messages"] for r in convert_file(path) if r.row is not None]
    batch = tokenize_batch({"messages": rows}, glm4())
    mismatched = []
    for index, messages in enumerate(rows):
        ids, labels = demo_process_batch(glm4(), messages)
        if (batch["input_ids"][index], batch["labels"][index]) != (ids, labels):
            mismatched.append(index)
    assert not mismatched, f"{len(mismatched)} of {len(rows)} rows differ from the demo, first: {mismatched[:5]}"


@needs_glm4
@pytest.mark.skipif(not SHARED_DATA_FILES, reason="../shared/data not present")
def test_glm4_generation_template_masks_on_shared_tool_rows():
    from glmdata.convert import convert_file

    for result in convert_file(SHARED / "data" / "glaive_toolcall_zh_1k.json"):
        if result.row is not None:
            assert_consistent_with_transformers(glm4(), result.row["messages"])


# --- the tiktoken path: glm-4-9b-chat's tokenizer encoded with tiktoken itself ---------------------


@needs_glm4
def test_glm4_tokenizer_is_encoded_with_tiktoken():
    assert tiktoken_encoding(glm4()) is not None
    assert tiktoken_encoding(tiny()) is None


@needs_glm4
def test_tiktoken_path_is_off_once_tokens_are_added():
    tokenizer = load_tokenizer(GLM4_DIR)
    tokenize(EXAMPLE, tokenizer)
    tokenizer.add_tokens(["<|extra|>"], special_tokens=True)
    assert tiktoken_encoding(tokenizer) is None
    assert tokenize(EXAMPLE, tokenizer) == tokenize(EXAMPLE, glm4())
    rendered = render_spans([{"role": "user", "content": "a<|extra|>b"}, {"role": "assistant", "content": "c"}])
    ids = encode_rendered(rendered, tokenizer)["input_ids"]
    assert ids == tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|extra|>") in ids


def test_tiktoken_and_tokenizers_paths_on_one_thread(tiny_tiktoken, monkeypatch):
    rows = [EXAMPLE, EXAMPLE[:2], [*EXAMPLE, {"role": "user", "content": "hello world " * 40}]] * 100
    threaded = [tokenize_batch({"messages": rows}, t) for t in (tiny_tiktoken, tiny())]
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    assert [tokenize_batch({"messages": rows}, t) for t in (tiny_tiktoken, tiny())] == threaded
