"""``glmdata tokenize`` and ``glmdata.tokenized``: Parquet files of ids, labels and masks, with
what they were made with in their metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from glmdata import tokenized  # noqa: E402
from glmdata.cli import app  # noqa: E402
from glmdata.convert import convert_file  # noqa: E402
from glmdata.masks import tokenize  # noqa: E402
from glmdata.render import load_template  # noqa: E402
from glmdata.tokenizer import load_tokenizer  # noqa: E402
from tests.tiny_tokenizer import write_tiktoken_dir  # noqa: E402

DATA = Path(__file__).parent.parent / "data"
GLAIVE = DATA / "glaive_toolcall_zh_sample.json"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return write_tiktoken_dir(tmp_path_factory.mktemp("tok") / "tiny")


def invoke(runner, *args: str):
    return runner.invoke(app, ["tokenize", *args])


def test_tokenize_writes_the_ids_labels_and_masks_of_every_kept_row(runner, tokenizer_dir, tmp_path):
    out = tmp_path / "train.parquet"
    result = invoke(runner, str(GLAIVE), "--tokenizer", str(tokenizer_dir), "-o", str(out), "--max-length", "300")
    kept = [r for r in convert_file(GLAIVE) if r.ok]
    assert result.exit_code == (1 if len(kept) < sum(1 for _ in convert_file(GLAIVE)) else 0), result.stderr
    table = pq.read_table(out)
    assert table.column_names == list(tokenized.COLUMNS)
    assert table.column("row").to_pylist() == [r.index for r in kept]
    tok = load_tokenizer(tokenizer_dir)
    expected = [tokenize(r.row["messages"], tok, max_length=300) for r in kept]
    for name in ("input_ids", "labels", "assistant_masks"):
        assert table.column(name).to_pylist() == [e[name] for e in expected]
    assert f"{len(kept):,} rows" in result.stderr


def test_the_file_says_what_it_was_made_with_and_check_refuses_other_settings(runner, tokenizer_dir, tmp_path):
    out = tmp_path / "train.parquet"
    invoke(runner, str(GLAIVE), "--tokenizer", str(tokenizer_dir), "-o", str(out), "--train-on", "all")
    made = tokenized.read_provenance(out)
    tok = load_tokenizer(tokenizer_dir)
    template = load_template(None)
    assert made is not None and made.train_on == "all" and made.max_length is None
    tokenized.check(out, tokenized.provenance(tok, template, "all", None))  # the same: no error
    with pytest.raises(ValueError, match="train_on: the file has 'all', this run 'assistant'"):
        tokenized.check(out, tokenized.provenance(tok, template, "assistant", None))
    other = load_template("glm-4-9b-chat.generation")
    with pytest.raises(ValueError, match="template: the file has"):
        tokenized.check(out, tokenized.provenance(tok, other, "all", None))
    tok.add_tokens(["<|extra|>"], special_tokens=True)
    with pytest.raises(ValueError, match="tokenizer: the file has"):
        tokenized.check(out, tokenized.provenance(tok, template, "all", None))


def test_a_parquet_file_without_the_metadata_is_refused(tmp_path, tokenizer_dir):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2]]}), path)
    assert tokenized.read_provenance(path) is None
    made = tokenized.provenance(load_tokenizer(tokenizer_dir), load_template(None), "assistant", None)
    with pytest.raises(ValueError, match="without glmdata's metadata"):
        tokenized.check(path, made)


def test_datasets_reads_the_file_as_a_pretokenized_dataset(runner, tokenizer_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "train.parquet"
    invoke(runner, str(GLAIVE), "--tokenizer", str(tokenizer_dir), "-o", str(out))
    dataset = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert dataset.column_names == list(tokenized.COLUMNS) and len(dataset) == pq.read_table(out).num_rows
    assert all(len(r["input_ids"]) == len(r["labels"]) == len(r["assistant_masks"]) for r in dataset)


def test_rejected_rows_are_counted_and_give_exit_1(runner, tokenizer_dir, write, tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    source = write("rows.jsonl", [good, {"messages": [{"role": "user", "content": "no answer"}]}, good])
    out = tmp_path / "train.parquet"
    result = invoke(runner, str(source), "--tokenizer", str(tokenizer_dir), "-o", str(out), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["rows_in"], summary["rows"], summary["rejected"]) == (3, 2, 1)
    assert pq.read_table(out).column("row").to_pylist() == [0, 2]
    assert "row 1" in result.stderr and "no-assistant" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["-o", "train.jsonl"], "must be a .parquet file"),
        (["--tokenizer", "/no/such/dir"], "does not exist"),
        (["--max-length", "0"], "--max-length"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(runner, tokenizer_dir, tmp_path, args, said, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"--tokenizer": str(tokenizer_dir), "-o": "train.parquet"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = invoke(runner, str(GLAIVE), *[x for pair in base.items() for x in pair])
    assert result.exit_code == 2 and said in result.stderr
    assert not list(tmp_path.glob("*.parquet"))


@pytest.mark.parametrize(
    ("own", "expected"),
    [("glm-4-9b-chat-v2", "glm-4-9b-chat-v2"), ("glm-4.5", "glm-4.5"), (None, "glm-4-9b-chat")],
)
def test_without_template_the_tokenizer_directory_s_own_known_template_is_used(runner, tmp_path, own, expected):
    """What glmtrain trains with: the tokenizer's own template when glmdata knows it (the shared
    glm-4-9b-chat tokenizer carries v2), else glm-4-9b-chat's; so glmtrain takes the file."""
    directory = write_tiktoken_dir(tmp_path / "tok")
    if own is not None:
        (directory / "chat_template.jinja").write_text(load_template(own).text, encoding="utf-8")
    else:  # a template glmdata does not know
        (directory / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")
    data = DATA / "advertisegen_messages_sample.jsonl"
    out = tmp_path / "train.parquet"
    result = invoke(runner, str(data), "--tokenizer", str(directory), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    made = tokenized.read_provenance(out)
    tok = load_tokenizer(directory)
    tokenized.check(out, tokenized.provenance(tok, load_template(expected), "assistant", None))
    assert made is not None
