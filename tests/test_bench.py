"""The benchmark's own logic, from the repository alone (no ../shared; tiny tokenizers): how ratios
are judged, interleaving, the workload, the report, what a section needs, and that the contenders
of each section produce what their checks compare. No timing is asserted: ratios at these sizes
mean nothing, bench/RESULTS.md records them from a full run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from tiny_tokenizer import write_tiktoken_dir

from bench import report, suite, tasks, tokenize_file, tutorial
from bench.measure import OtherLoad, interleaved
from bench.workload import load_source, replicated, vary, write_files
from glmdata.convert import convert_file

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "glaive_toolcall_zh_sample.json"


def run_bench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--no-write", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


# --- judging ----------------------------------------------------------------------------------


def test_a_speed_up_is_judged_on_medians_and_shows_the_minimums_too() -> None:
    theirs, ours = {"median": 3.0, "min": 3.6}, {"median": 1.0, "min": 0.9}
    ratio = suite.speedup("x", "in process", theirs, ours, 3)
    assert (ratio["value"], ratio["target"], ratio["passed"]) == ("3.00x (4.00x)", ">= 3x", True)
    assert suite.speedup("x", "in process", ours, theirs, 3)["passed"] is False


def test_a_cost_is_at_most_its_target_and_a_ratio_without_target_is_reported() -> None:
    ours, floor = {"median": 4.4, "min": 4.0}, {"median": 1.0, "min": 1.0}
    ratio = suite.cost("x", "whole command", ours, floor, 4)
    assert (ratio["target"], ratio["passed"]) == ("<= 4x", False)
    reported = suite.cost("x", "whole command", ours, floor)
    assert (reported["target"], reported["passed"]) == ("report", None)


def test_memory_is_judged_on_the_highest_peak_and_reports_the_growth() -> None:
    runs = [
        {"name": "`glmdata convert`", "input": "JSONL", "rows": 10, "max_rss": 50 * suite.MB},
        {"name": "`glmdata convert`", "input": "JSONL", "rows": 1000, "max_rss": 80 * suite.MB},
        {"name": "`glmdata stats`", "input": "JSONL", "rows": 10, "max_rss": 310 * suite.MB},
    ]
    convert, stats = suite.memory_ratios(runs)
    assert convert["value"] == "max 80 MB (grows +30 MB)" and convert["passed"] is True
    assert stats["passed"] is False


def test_interleaved_rotates_the_order_every_round() -> None:
    calls: list[str] = []

    def contender(name: str):
        return lambda: calls.append(name) or 1.0

    samples = interleaved({name: contender(name) for name in "abc"}, 3, log=lambda _: None)
    assert calls == list("abcbcacab")
    assert [s.seconds for s in samples.values()] == [[1.0] * 3] * 3


def test_the_other_load_is_a_share_of_the_machine() -> None:
    share = OtherLoad().share()
    assert share is None or 0.0 <= share <= 1.0


# --- the workload -----------------------------------------------------------------------------


def test_replicas_vary_the_text_and_keep_what_validity_depends_on() -> None:
    source = load_source(SAMPLE)
    rows = list(replicated(2 * len(source) + 3, source))
    assert len(rows) == 2 * len(source) + 3 and rows[: len(source)] == source
    for index, (row, copy) in enumerate(zip(source, rows[len(source) : 2 * len(source)], strict=True)):
        assert copy == vary(row, 1, index)
        assert [t["from"] for t in copy["conversations"]] == [t["from"] for t in row["conversations"]]
        for turn, original in zip(copy["conversations"], row["conversations"], strict=True):
            assert (turn["value"] != original["value"]) == (turn["from"] in ("human", "gpt"))
        if row.get("tools"):
            names = [tool["name"] for tool in orjson.loads(row["tools"])]
            assert [tool["name"] for tool in orjson.loads(copy["tools"])] == names
            assert vary(row, 1, index, repeat_tools=True)["tools"] == row["tools"]


def test_the_workload_files_hold_the_same_rows(tmp_path: Path) -> None:
    jsonl, array = write_files(30, tmp_path, source_path=SAMPLE)
    assert array is not None
    with open(jsonl, "rb") as f:
        assert [orjson.loads(line) for line in f] == orjson.loads(array.read_bytes())


# --- the report -------------------------------------------------------------------------------


def section(key: str, number: int, **ratio: object) -> dict:
    ratio = {"label": f"{key} ratio", "measure": "in process", "value": "1.00x", "target": "report", **ratio}
    return {"key": key, "title": f"{number}. {key}", "stamp": {"date": "today"}, "ratios": [ratio]}


def test_the_report_lists_current_sections_in_order_and_forgets_old_ones(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(report, "RESULTS_JSON", tmp_path / "results.json")
    monkeypatch.setattr(report, "RESULTS_MD", tmp_path / "RESULTS.md")
    old = {
        "chunks": section("chunks", 9),
        "floor": section("floor", 3, passed=False),
        "tokenize": section("tokenize", 1),
    }
    report.RESULTS_JSON.write_bytes(orjson.dumps({"sections": old}))
    store = report.load()
    assert list(store["sections"]) == ["floor", "tokenize"]
    report.save(store)
    text = report.RESULTS_MD.read_text(encoding="utf-8")
    assert "chunks" not in text and text.index("## 1. tokenize") < text.index("## 3. floor")
    assert "| 3 | floor ratio | in process | 1.00x | report | **MISS** |" in text
    assert report.load()["sections"] == store["sections"]


# --- what a section needs ---------------------------------------------------------------------


def test_sections_say_what_they_need(tmp_path: Path) -> None:
    ctx = suite.Context(tmp_path, rows=10, repeats=1, source=tmp_path / "none.json", tokenizer_dir=tmp_path / "none")
    assert "no workload source" in (suite.missing("floor", ctx) or "")
    assert suite.missing("startup", ctx) is None and suite.missing("size", ctx) is None
    ctx = suite.Context(tmp_path, rows=10, repeats=1, source=SAMPLE, tokenizer_dir=tmp_path / "none")
    assert suite.missing("floor", ctx) is None
    assert "no tokenizer" in (suite.missing("tokenize", ctx) or "")
    assert "no tokenizer" in (suite.missing("pipeline", ctx) or "")


def test_without_shared_files_the_bench_says_what_it_skips_and_runs_the_rest(tmp_path: Path) -> None:
    proc = run_bench("--only", "floor,size", "--source", str(tmp_path / "none.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipping floor: no workload source at {tmp_path / 'none.json'}" in proc.stderr
    assert "| 7 | lines of glmdata/**/*.py after `ruff format --line-length 120` |" in proc.stdout


def test_the_size_is_counted_on_a_formatted_copy(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    long_line = "values = [" + ", ".join(f"'{'x' * 20}{i}'" for i in range(12)) + "]\n"
    (package / "a.py").write_text(long_line)
    assert suite.formatted_lines(package) == {"a.py": 14}
    assert (package / "a.py").read_text() == long_line


# --- the contenders ---------------------------------------------------------------------------


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    messages = tmp_path / "messages.jsonl"
    with open(messages, "wb") as out:
        out.writelines(result.encoded + b"\n" for result in convert_file(SAMPLE) if result.ok)
    return messages


@pytest.fixture
def tokenizers(tmp_path: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("GLMDATA_CACHE_DIR", str(tmp_path / "cache"))
    tiktoken_dir = write_tiktoken_dir(tmp_path / "tiktoken")
    tasks.save_tokenizer_json(str(tiktoken_dir), str(tmp_path / "tokenizer-json"))
    return {"tiktoken files": str(tiktoken_dir), "tokenizer.json": str(tmp_path / "tokenizer-json")}


def test_tokenize_contenders_give_the_same_ids_with_both_kinds(tmp_path, converted, tokenizers) -> None:
    rendered = str(tmp_path / "rendered.jsonl")
    tasks.spans(str(converted), rendered)
    bare = {kind: tasks.encode_bare(rendered, directory) for kind, directory in tokenizers.items()}
    ours = {kind: tasks.encode_masks(rendered, directory) for kind, directory in tokenizers.items()}
    assert {kind: r["encoder"] for kind, r in bare.items()} == {
        "tiktoken files": "tiktoken",
        "tokenizer.json": "tokenizers",
    }
    assert len({r["digest"] for r in (*bare.values(), *ours.values())}) == 1
    assert len({r["labels"] for r in ours.values()}) == 1
    assert {r["rows"] for r in ours.values()} == {len(converted.read_bytes().splitlines())}


def test_pipeline_commands_write_ids_and_labels(tmp_path, converted, tokenizers) -> None:
    outputs = {}
    for kind, directory in tokenizers.items():
        outputs["tutorial", kind] = tmp_path / f"tutorial-{kind}.jsonl"
        outputs["batched", kind] = tmp_path / f"batched-{kind}.jsonl"
        outputs["glmdata", kind] = tmp_path / f"glmdata-{kind}.jsonl"
        tutorial.main([str(SAMPLE), str(outputs["tutorial", kind]), directory])
        tutorial.main([str(SAMPLE), str(outputs["batched", kind]), directory, "--batch", "5"])
        tokenize_file.main([str(converted), str(outputs["glmdata", kind]), directory])
    theirs = [orjson.loads(line) for line in outputs["tutorial", "tiktoken files"].read_bytes().splitlines()]
    ours = [orjson.loads(line) for line in outputs["glmdata", "tiktoken files"].read_bytes().splitlines()]
    assert len(theirs) == len(load_source(SAMPLE)) and all(row["labels"] == row["input_ids"] for row in theirs)
    assert len(ours) == len(converted.read_bytes().splitlines())
    assert all(-100 in row["labels"] and set(row["labels"]) - {-100} <= set(row["input_ids"]) for row in ours)
    assert len({path.read_bytes() for (who, _), path in outputs.items() if who != "glmdata"}) == 1
    assert len({path.read_bytes() for (who, _), path in outputs.items() if who == "glmdata"}) == 1


def test_line_batches_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"1\n\n2\n3\n  \n4\n")
    with open(path, "rb") as f:
        assert list(tokenize_file.line_batches(f, 3)) == [[b"1\n", b"2\n", b"3\n"], [b"4\n"]]


def test_the_cheap_sections_run_and_their_checks_hold(tmp_path: Path) -> None:
    proc = run_bench(
        "--only", "floor,memory,workers,startup,render", "--source", str(SAMPLE), "--rows", "60", "--repeats", "1",
        "--memory-rows", "30,60", "--workers-rows", "90", "--startup-runs", "1", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = [line for line in proc.stdout.splitlines() if line.startswith(("- OK:", "- FAILED:"))]
    assert len(checks) >= 10 and not [line for line in checks if line.startswith("- FAILED")], "\n".join(checks)
    summary = proc.stdout.split("## Summary", 1)[1]
    for number in ("3", "4", "5", "6", "8"):
        assert f"\n| {number} | " in summary
