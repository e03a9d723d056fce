"""glmdata stats: counts on a hand-made file, truncation against the renderer's token view, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_tokenizer import build_tiny_tokenizer
from typer.testing import CliRunner

from glmdata.cli import app
from glmdata.masks import tokenize, truncation_report
from glmdata.render import render_spans
from glmdata.stats import compute, histogram, percentile

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(__file__).resolve().parents[1] / "data"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ROWS = [
    # 0: a tool call with its observation
    {
        "messages": [
            {"role": "system", "content": "", "tools": [WEATHER]},
            {"role": "user", "content": "Weather in Beijing?"},
            {"role": "assistant", "metadata": "get_weather", "content": '{"city": "Beijing"}'},
            {"role": "observation", "content": '{"temp": 20}'},
            {"role": "assistant", "content": "It is 20 degrees."},
        ]
    },
    # 1 and 2: plain chat, exact duplicates
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    # 3: rejected (no assistant turn)
    {"messages": [{"role": "user", "content": "anyone?"}]},
    # 4: nothing to train (the only assistant turn has loss false)
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "loss": False}]},
    # 5: two user turns, a long answer
    {
        "messages": [
            {"role": "user", "content": "tell me"},
            {"role": "assistant", "content": "x" * 40},
            {"role": "user", "content": "more"},
            {"role": "assistant", "content": "y" * 80},
        ]
    },
]


@pytest.fixture()
def handmade(tmp_path: Path) -> Path:
    path = tmp_path / "hand.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_counts_on_a_handmade_file(handmade: Path) -> None:
    s = compute(str(handmade)).to_dict()
    assert s["unit"] == "characters"
    assert s["rows_in"] == 6 and s["rejected"] == 1 and s["rows"] == 5
    assert s["duplicates"] == 1
    assert s["messages_per_role"] == {"system": 1, "user": 6, "assistant": 7, "observation": 1}
    assert s["user_turns_per_row"] == {"min": 1, "p50": 1, "p90": 2, "p99": 2, "max": 2, "mean": 1.2}
    assert s["rows_with_tools"] == 1 and s["rows_without_tools"] == 4 and s["rows_with_calls"] == 1
    assert s["tools_declared"] == {"get_weather": 1} and s["tools_called"] == {"get_weather": 1}
    audit = s["loss_audit"]
    assert audit["rows_with_nothing_trained"] == 1 and audit["nothing_trained_rows"] == [4]
    # characters: each trained span = text after the assistant tag through the next tag
    call = len("get_weather\n" + '{"city": "Beijing"}' + "<|observation|>")
    assert audit["trained_by_turn_kind"]["tool-call turns"] == call
    assert audit["trained_by_role"] == {"assistant": s["trained_total"]}
    assert s["longest_rows"][0]["row"] == 0


def test_character_lengths_are_those_of_the_training_text(handmade: Path) -> None:
    s = compute(str(handmade))
    expected = sorted(len(render_spans(r["messages"]).text) for i, r in enumerate(ROWS) if i not in (3, 4))
    assert sorted(s.lengths) == expected
    trained = sorted(
        sum(e - b for b, e in render_spans(r["messages"]).spans) for i, r in enumerate(ROWS) if i not in (3, 4)
    )
    assert sorted(s.trained_lengths) == trained


@pytest.mark.parametrize("max_length", [10, 40, 60, 100, 10_000])
def test_truncation_matches_the_token_view(handmade: Path, tok, max_length: int) -> None:
    s = compute(str(handmade), tokenizer=tok, max_length=max_length).to_dict()
    rows = [r for i, r in enumerate(ROWS) if i not in (3, 4)]
    reports = [truncation_report(r["messages"], tok, max_length) for r in rows]
    cut = s["truncation"]
    assert cut["rows_cut"] == sum(r.truncated for r in reports)
    assert cut["trained_cut"] == sum(r.trained_tokens_cut for r in reports)
    assert cut["cut_inside_trained_turn"] == sum(r.cut_inside_trained_turn for r in reports)
    assert s["trained_total"] == sum(sum(1 for l in tokenize(r["messages"], tok)["labels"] if l != -100) for r in rows)
    assert s["length"]["max"] == max(len(tokenize(r["messages"], tok)["input_ids"]) for r in rows)


def test_percentile_and_histogram() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([], 50) == 0
    bins = histogram(values, bins=10)
    assert sum(c for _, _, c in bins) == 100
    assert bins[0][0] == 0 and bins[-1][1] > 100
    assert histogram(values, bins=10, limit=500)[-1][1] > 500


def test_cli_json_and_plot(handmade: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "h.png"
    result = CliRunner().invoke(app, ["stats", str(handmade), "--max-length", "30", "--json", "--plot", str(png)])
    assert result.exit_code == 1  # row 3 is rejected
    data = json.loads(result.stdout)
    assert data["truncation"]["max_length"] == 30 and data["unit"] == "characters"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


PLOT_HINT = '--plot needs matplotlib, which is not installed: pip install -e ".[plot]"'


def test_cli_plot_without_matplotlib_stops_before_reading(handmade: Path, tmp_path: Path, monkeypatch) -> None:
    import glmdata.stats

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.setattr(glmdata.stats, "compute", lambda *a, **k: pytest.fail("the data was read"))
    png = tmp_path / "h.png"
    result = CliRunner().invoke(app, ["stats", str(handmade), "--json", "--plot", str(png)])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {PLOT_HINT}\n")
    assert not png.exists()
    assert 'pip install -e ".[plot]"' in (DATA.parent / "README.md").read_text(encoding="utf-8")  # the same hint


def test_console_plot_without_matplotlib_stops_before_reading(tmp_path: Path) -> None:
    """As the installed command: a missing input is not even looked at (reading it would say so)."""
    code = "import sys; sys.modules['matplotlib'] = None; from glmdata.cli import main; main()"
    argv = ["stats", str(tmp_path / "missing.jsonl"), "--plot", str(tmp_path / "h.png")]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {PLOT_HINT}\n")


def test_cli_table_says_characters_without_tokenizer() -> None:
    result = CliRunner().invoke(app, ["stats", str(DATA / "alpaca_en_sample.json"), "--max-length", "200"])
    assert result.exit_code == 0, result.output
    assert "lengths are characters" in result.output
    assert "--max-length 200" in result.output and "histogram" in result.output


def test_cli_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["stats", str(DATA / "alpaca_en_sample.json"), "--max-length", "0"]).exit_code == 2
    assert runner.invoke(app, ["stats", str(DATA / "alpaca_en_sample.json"), "--train-on", "some"]).exit_code == 2
    result = runner.invoke(app, ["stats", str(DATA / "alpaca_en_sample.json"), "--tokenizer", "/no/such/dir"])
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.skipif(not (SHARED / "tokenizer/glm-4-9b-chat/tokenizer.model").exists(), reason="needs ../shared")
def test_real_vocabulary_on_glaive_1k() -> None:
    from glmdata.tokenizer import load_tokenizer

    tok = load_tokenizer(SHARED / "tokenizer/glm-4-9b-chat")
    s = compute(str(SHARED / "data/glaive_toolcall_zh_1k.json"), tokenizer=tok, max_length=512).to_dict()
    assert s["rows"] == 992 and s["unit"] == "tokens"
    assert 300 < s["truncation"]["rows_cut"] < 346  # the tutorial's own rendering cuts 346 (FIELD_NOTES §4)
    assert s["length"]["max"] < 2573
