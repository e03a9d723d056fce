"""The ``glmdata`` command through typer's CliRunner (and once as the real console script):
what it writes, what it prints where, and its exit codes (0 ok, 1 data problems, 2 usage or I/O),
never with a traceback for a user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, REPO, chat_row, read_jsonl, tool_row

from glmdata.cli import app
from glmdata.schema import schema_texts, stale_files

GLAIVE = DATA / "glaive_toolcall_zh_sample.json"
ALPACA = DATA / "alpaca_en_sample.json"
SCRIPT = Path(sys.executable).with_name("glmdata")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch) -> None:
    """Every command runs in an empty directory: nothing lands in the checkout, and what a
    command writes by default (messages.jsonl, rejects.jsonl) is visible."""
    monkeypatch.chdir(tmp_path)


def invoke(runner, *args: str, code: int, stdin: bytes | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def flat(text: str) -> str:
    """stderr as one line: rich wraps the summary at the console width (keeping the spaces)."""
    return text.replace("\n", "")


def files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# ---------------------------------------------------------------------------------------- convert


def test_convert_clean_data_exits_0(runner, tmp_path: Path) -> None:
    result = invoke(runner, "convert", ALPACA, "-o", "out.jsonl", code=0)
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 20 and rows[0]["messages"][0]["role"] == "user"
    assert (tmp_path / "out.jsonl").read_bytes() == (REPO / "tests/golden/convert/alpaca_en.jsonl").read_bytes()
    assert "20 rows in = 20 out + 0 rejected + 0 deduplicated" in flat(result.stderr)
    assert result.stdout == ""  # people read stderr; stdout is for data


def test_convert_default_output_name(runner, tmp_path: Path) -> None:
    invoke(runner, "convert", ALPACA, code=0)
    assert "messages.jsonl" in files(tmp_path)
    assert len(read_jsonl(tmp_path / "messages.jsonl")) == 20


def test_convert_writes_rejects_verbatim_and_report(runner, tmp_path: Path) -> None:
    result = invoke(runner, "convert", GLAIVE, "-o", "out.jsonl", "--report", "report.json", code=1)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 19
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [(r["index"], r["line"]) for r in rejects] == [(16, 474), (19, 577), (21, 667), (22, 712), (23, 765)]
    source = GLAIVE.read_bytes()
    rows = json.loads(source)
    for record in rejects:
        assert record["source"] == str(GLAIVE)
        assert record["raw"].encode("utf-8") in source  # verbatim bytes of the source
        assert json.loads(record["raw"]) == rows[record["index"]]
        assert record["errors"] and all({"code", "path", "message", "hint"} <= set(e) for e in record["errors"])
    assert rejects[0]["errors"][0]["code"] == "observation-without-call"
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert (report["rows_in"], report["rows_out"], report["rejected"], report["deduplicated"]) == (24, 19, 5, 0)
    assert report["repairs"]["empty-tools"]["rows"] == 5
    assert report["checks"]["observation-without-call"]["examples"] == [16, 23]
    # the findings name the file, line, row, path and the fix
    assert f"{GLAIVE}:474 row 16" in flat(result.stderr)
    assert "observation-without-call" in flat(result.stderr)


def test_convert_rejects_path_option_and_dedupe(runner, tmp_path: Path) -> None:
    invoke(
        runner, "convert", GLAIVE, "-o", "out.jsonl", "--rejects", "bad.jsonl", "--dedupe", "--report", "r.json", code=1
    )
    assert {"out.jsonl", "bad.jsonl", "r.json"} <= files(tmp_path)
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert (report["rows_out"], report["rejected"], report["deduplicated"]) == (18, 5, 1)
    assert len(read_jsonl(tmp_path / "bad.jsonl")) == 5


def test_convert_call_style_json(runner, tmp_path: Path) -> None:
    invoke(runner, "convert", GLAIVE, "-o", "out.jsonl", "--call-style", "json", code=1)
    assert (tmp_path / "out.jsonl").read_bytes() == (
        REPO / "tests/golden/convert/glaive.call-style-json.jsonl"
    ).read_bytes()


def test_convert_strict_and_no_repair(runner, tmp_path: Path) -> None:
    invoke(runner, "convert", DATA / "identity_sample.json", "-o", "out.jsonl", "--strict", code=1)
    assert read_jsonl(tmp_path / "out.jsonl") == []
    assert [r["errors"][0]["code"] for r in read_jsonl(tmp_path / "out.rejects.jsonl")] == ["placeholder"] * 8
    invoke(
        runner,
        "convert",
        DATA / "messages_arrow_nulls_sample.jsonl",
        "-o",
        "n.jsonl",
        "--no-repair",
        "null-fields",
        code=1,
    )
    assert {r["errors"][0]["code"] for r in read_jsonl(tmp_path / "n.rejects.jsonl")} == {"disabled-repair"}


def test_convert_from_forces_the_format(runner, tmp_path: Path) -> None:
    invoke(runner, "convert", ALPACA, "-o", "out.jsonl", "--from", "sharegpt", code=1)
    assert read_jsonl(tmp_path / "out.jsonl") == []
    assert {e["code"] for r in read_jsonl(tmp_path / "out.rejects.jsonl") for e in r["errors"]} == {"schema"}
    invoke(runner, "convert", ALPACA, "-o", "ok.jsonl", "--from", "alpaca", code=0)


def test_convert_json_summary_on_stdout(runner, tmp_path: Path) -> None:
    result = invoke(runner, "convert", GLAIVE, "-o", "out.jsonl", "--json", code=1)
    summary = json.loads(result.stdout)
    assert (summary["rows_in"], summary["rows_out"], summary["rejected"]) == (24, 19, 5)
    assert summary["checks"]["duplicate"]["count"] == 1


def test_convert_to_stdout(runner, tmp_path: Path) -> None:
    result = invoke(runner, "convert", ALPACA, "-o", "-", code=0)
    assert result.stdout.encode("utf-8") == (REPO / "tests/golden/convert/alpaca_en.jsonl").read_bytes()
    assert "20 rows in" in result.stderr and "20 rows in" not in result.stdout
    # no --json when stdout carries the data
    invoke(runner, "convert", ALPACA, "-o", "-", "--json", code=2)


def test_convert_from_stdin(runner, tmp_path: Path) -> None:
    result = invoke(runner, "convert", "-", "-o", "-", "--rejects", "bad.jsonl", code=1, stdin=GLAIVE.read_bytes())
    assert result.stdout.encode("utf-8") == (REPO / "tests/golden/convert/glaive.jsonl").read_bytes()
    assert [r["index"] for r in read_jsonl(tmp_path / "bad.jsonl")] == [16, 19, 21, 22, 23]


def test_convert_empty_file_exits_1(runner, tmp_path: Path) -> None:
    for content in (b"", b"  \n\n"):
        (tmp_path / "empty.jsonl").write_bytes(content)
        result = invoke(runner, "convert", "empty.jsonl", "-o", "out.jsonl", code=1)
        assert "no rows" in flat(result.stderr)


def test_convert_broken_rows_exit_1_with_line_numbers(runner, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(json.dumps(chat_row()).encode() + b'\n{"messages": [\n\xff\n')
    result = invoke(runner, "convert", "in.jsonl", "-o", "out.jsonl", code=1)
    assert [(r["line"], r["errors"][0]["code"]) for r in read_jsonl(tmp_path / "out.rejects.jsonl")] == [
        (2, "invalid-json"),
        (3, "invalid-utf8"),
    ]
    assert "in.jsonl:2 row 1" in flat(result.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "missing.json"], "no such file"),
        (["convert", "."], "is a directory"),
        (["convert", str(ALPACA), "--from", "yaml"], "unknown format"),
        (["convert", str(ALPACA), "--no-repair", "nope"], "unknown repair"),
        (["convert", str(ALPACA), "-o", "no/such/dir/out.jsonl"], "does not exist"),
        (["convert", str(ALPACA), "-o", "afile/out.jsonl"], "afile"),
        (["validate", "missing.json"], "no such file"),
        (["validate", str(ALPACA), "--from", "yaml"], "unknown format"),
    ],
)
def test_usage_and_io_errors_exit_2_in_one_line(runner, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "afile").write_text("not a directory")
    before = files(tmp_path)
    result = invoke(runner, *args, code=2)
    assert message in flat(result.stderr)
    assert result.stderr.strip().startswith("error:")
    assert files(tmp_path) == before  # nothing written, no temporary files left


def test_output_equal_to_input_is_refused(runner, tmp_path: Path) -> None:
    data = ALPACA.read_bytes()
    (tmp_path / "a.json").write_bytes(data)
    result = invoke(runner, "convert", "a.json", "-o", "a.json", code=2)
    assert "is the input file" in flat(result.stderr)
    assert (tmp_path / "a.json").read_bytes() == data
    invoke(runner, "convert", "a.json", "-o", "./sub/../a.json", code=2)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to any directory")
def test_unwritable_output_directory_exits_2(runner, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = invoke(runner, "convert", ALPACA, "-o", "locked/out.jsonl", code=2)
        assert "not writable" in result.stderr
    finally:
        locked.chmod(0o755)


def test_failed_input_leaves_no_output(runner, tmp_path: Path) -> None:
    (tmp_path / "old.jsonl").write_text("keep\n")
    invoke(runner, "convert", "missing.json", "-o", "old.jsonl", code=2)
    assert (tmp_path / "old.jsonl").read_text() == "keep\n"
    assert files(tmp_path) == {"old.jsonl"}


# ---------------------------------------------------------------------------------------- validate


def test_validate_writes_nothing(runner, tmp_path: Path) -> None:
    result = invoke(runner, "validate", GLAIVE, code=1)
    assert files(tmp_path) == set()
    assert "24 rows in = 19 out + 5 rejected" in flat(result.stderr)
    invoke(runner, "validate", ALPACA, code=0)
    invoke(runner, "validate", DATA / "identity_sample.json", code=0)  # warnings only
    invoke(runner, "validate", DATA / "identity_sample.json", "--strict", code=1)
    assert files(tmp_path) == set()


def test_validate_json_and_report(runner, tmp_path: Path) -> None:
    result = invoke(runner, "validate", GLAIVE, "--json", "--report", "r.json", code=1)
    assert json.loads(result.stdout) == json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert files(tmp_path) == {"r.json"}


def test_validate_empty_file_exits_1(runner, tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_bytes(b"")
    invoke(runner, "validate", "empty.json", code=1)


# ---------------------------------------------------------------------------------------- schema


def test_schema_writes_every_format_and_check_detects_stale_files(runner, tmp_path: Path) -> None:
    result = invoke(runner, "schema", "-o", "out", code=0)
    written = tmp_path / "out"
    assert {p.name for p in written.iterdir()} == set(schema_texts())
    for name, text in schema_texts().items():
        assert (written / name).read_text(encoding="utf-8") == text
        assert json.loads(text)["$schema"].endswith("2020-12/schema")
    assert "messages.schema.json" in result.stderr
    invoke(runner, "schema", "-o", "out", "--check", code=0)
    (written / "alpaca.schema.json").write_text("{}\n")
    (written / "openai.schema.json").unlink()
    result = invoke(runner, "schema", "-o", "out", "--check", code=1)
    assert "alpaca.schema.json" in flat(result.stderr) and "openai.schema.json" in flat(result.stderr)
    assert (written / "alpaca.schema.json").read_text() == "{}\n"  # --check writes nothing


def test_schemas_validate_the_shipped_samples() -> None:
    from jsonschema import Draft202012Validator

    texts = schema_texts()
    alpaca = Draft202012Validator(json.loads(texts["alpaca.schema.json"]))
    assert all(alpaca.is_valid(row) for row in json.loads(ALPACA.read_text(encoding="utf-8")))
    sharegpt = Draft202012Validator(json.loads(texts["sharegpt.schema.json"]))
    assert all(sharegpt.is_valid(row) for row in json.loads(GLAIVE.read_text(encoding="utf-8")))
    messages = Draft202012Validator(json.loads(texts["messages.schema.json"]))
    golden = read_jsonl(REPO / "tests/golden/convert/glaive.jsonl")
    assert all(messages.is_valid(row) for row in golden)
    assert not messages.is_valid({"messages": [{"role": "users", "content": "x"}]})


def test_committed_schemas_are_up_to_date() -> None:
    assert stale_files(REPO / "schemas") == [], "run `glmdata schema` and commit schemas/"


# ---------------------------------------------------------------------------------------- render

ROWS = [chat_row("q0", "a0"), tool_row(), chat_row("q2 :smile: [bold]", "a2")]


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def converted_messages(index: int) -> list:
    from glmdata.convert import convert_row

    return convert_row(ROWS[index]).row["messages"]


def test_render_marks_the_trained_text_when_stdout_is_not_a_terminal(runner, rows_file: Path) -> None:
    from glmdata.render import render_spans

    result = invoke(runner, "render", rows_file, "--row", "-1", code=0)
    text, [(start, end)] = render_spans(converted_messages(2))
    assert result.stdout == f"{text[:start]}⟦{text[start:end]}⟧{text[end:]}\n"  # ":smile:" and "[bold]" as written
    assert f"row 2: {len(text):,} characters, {end - start:,} trained (trained text between ⟦ and ⟧" in flat(
        result.stderr
    )


def test_render_raw_rows_and_generation_prompt(runner, rows_file: Path) -> None:
    from glmdata.render import render, render_spans

    raw = invoke(runner, "render", rows_file, "--row", "1", "--raw", code=0)
    assert raw.stdout == render_spans(converted_messages(1)).text and raw.stderr == ""
    many = invoke(runner, "render", rows_file, "--rows", "1:", code=0)
    assert [json.loads(line) for line in many.stdout.splitlines()] == [
        {"text": render_spans(converted_messages(i)).text} for i in (1, 2)
    ]
    prompt = invoke(runner, "render", rows_file, "--raw", "--generation-prompt", code=0)
    assert prompt.stdout == render(converted_messages(0), add_generation_prompt=True)
    assert prompt.stdout.endswith("<|assistant|>")


def test_render_without_a_file_asks_for_convert_first(runner) -> None:
    result = invoke(runner, "render", code=2)
    assert "messages.jsonl not found: run `glmdata convert DATA -o messages.jsonl` first" in result.stderr


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from tiny_tokenizer import save_tiny_tokenizer

    return save_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def test_render_tokens_shows_ids_labels_and_the_cut(runner, rows_file: Path, tokenizer_dir: Path) -> None:
    from glmdata.masks import IGNORE_INDEX, tokenize
    from glmdata.tokenizer import load_tokenizer

    encoded = tokenize(converted_messages(0), load_tokenizer(tokenizer_dir))
    ids, trained = encoded["input_ids"], sum(label != IGNORE_INDEX for label in encoded["labels"])
    args = ("render", rows_file, "--tokens", "--tokenizer", tokenizer_dir)
    result = invoke(runner, *args, "--max-length", "5", code=0)
    out = flat(result.stdout)
    assert "151331" in out and "[gMASK]" in out  # a special token's id and text, not rich markup
    assert f"tokens: {len(ids):,}  trained tokens: {trained:,}" in out
    assert f"--max-length 5 truncates this row: cuts {len(ids) - 5:,} tokens, {trained:,} of them trained" in out
    assert "keeps the whole row" in flat(invoke(runner, *args, "--max-length", str(len(ids)), code=0).stdout)
    assert "--tokens needs --tokenizer" in invoke(runner, "render", rows_file, "--tokens", code=2).stderr


def test_check_template_and_install_template(runner, rows_file: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    import shutil

    from glmdata.render import DEFAULT_TEMPLATE, GENERATION_TEMPLATE, load_template

    same = invoke(runner, "render", rows_file, "--check-template", tokenizer_dir, code=0)
    assert "identical: 3 rows (all rows) render the same" in flat(same.stderr)
    other = Path(shutil.copytree(tokenizer_dir, tmp_path / "other"))
    (other / "chat_template.jinja").write_text(load_template(tokenizer_dir).text + "x", encoding="utf-8")
    differs = invoke(runner, "render", rows_file, "--row", "1", "--check-template", other, code=1)
    assert "row 1: templates differ at character" in flat(differs.stderr)
    assert "first differing token" in flat(differs.stderr)
    installed = invoke(runner, "install-template", other, code=0)
    assert flat(installed.stderr) == f"wrote {other / 'chat_template.jinja'}"
    assert load_template(other).text == load_template(GENERATION_TEMPLATE).text
    invoke(runner, "render", rows_file, "--check-template", other, code=0)
    invoke(runner, "install-template", other, "--plain", code=0)
    assert load_template(other).text == load_template(DEFAULT_TEMPLATE).text
    assert "not a directory" in invoke(runner, "install-template", rows_file, code=2).stderr


# ---------------------------------------------------------------------------------------- the real script


def test_console_script_end_to_end(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is not installed (pip install -e .)"
    done = subprocess.run(
        [str(SCRIPT), "convert", str(GLAIVE), "-o", "out.jsonl", "--report", "r.json", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == (REPO / "tests/golden/convert/glaive.jsonl").read_bytes()
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["rejected"] == 5
    missing = subprocess.run([str(SCRIPT), "validate", "missing.json"], cwd=tmp_path, capture_output=True, timeout=120)
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr and b"no such file" in missing.stderr
    piped = subprocess.run(
        [str(SCRIPT), "convert", "-", "-o", "-", "-q"],
        cwd=tmp_path,
        input=ALPACA.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert piped.returncode == 0 and piped.stdout == (REPO / "tests/golden/convert/alpaca_en.jsonl").read_bytes()


def test_help_does_not_import_heavy_libraries(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([str(SCRIPT), "--help"], cwd=tmp_path, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0 and b"convert" in done.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert "glmdata" in imported  # the profile did record the imports
    assert imported & {"torch", "transformers", "datasets", "trl", "peft", "accelerate", "swanlab", "pyarrow"} == set()


def test_import_glmdata_is_light() -> None:
    code = "import sys, glmdata, glmdata.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.replace("'", '"'))) & {"torch", "transformers", "datasets"} == set()


# ---------------------------------------------------------------------------------------- render --all


def test_render_all_names_the_first_rejected_rows_then_counts_the_rest(runner, tmp_path: Path) -> None:
    """A large file with many broken rows must not flood stderr: the first SHOW_FINDINGS are named,
    the rest counted; every good row is still rendered and the exit code says rows were left out."""
    from glmdata.cli.common import SHOW_FINDINGS

    broken = {"messages": [{"role": "user", "content": "hi"}]}  # no assistant turn: rejected
    rows = [chat_row("q", "a") if i % 2 else broken for i in range(2 * SHOW_FINDINGS + 10)]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = invoke(runner, "render", source, "--all", code=1)
    named = [line for line in result.stderr.splitlines() if "rejected:" in line]
    assert len(named) == SHOW_FINDINGS and named[0].startswith("row 0 rejected:")
    assert "... and 5 more rows not rendered" in flat(result.stderr)
    assert len(result.stdout.splitlines()) == SHOW_FINDINGS + 5
