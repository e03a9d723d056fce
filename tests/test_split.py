"""glmdata split: deterministic, stratified, no duplicate leakage, atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from glmdata.cli import app
from glmdata.split import CALLS, choose_eval, split_file, stratum

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "glaive_toolcall_zh_sample.json"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_same_seed_same_split_and_every_row_once(tmp_path: Path) -> None:
    a = split_file(str(SAMPLE), str(tmp_path / "t1"), str(tmp_path / "e1"), fraction=0.25, seed=7)
    split_file(str(SAMPLE), str(tmp_path / "t2"), str(tmp_path / "e2"), fraction=0.25, seed=7)
    assert (tmp_path / "t1").read_bytes() == (tmp_path / "t2").read_bytes()
    assert (tmp_path / "e1").read_bytes() == (tmp_path / "e2").read_bytes()
    train, evaluation = _lines(tmp_path / "t1"), _lines(tmp_path / "e1")
    assert a.train == len(train) and a.eval == len(evaluation)
    assert a.train + a.eval == a.report.rows_out == 19
    split_file(str(SAMPLE), str(tmp_path / "t3"), str(tmp_path / "e3"), fraction=0.25, seed=8)
    assert _lines(tmp_path / "e3") != evaluation


def test_tool_call_rows_in_both_parts(tmp_path: Path) -> None:
    split_file(str(SAMPLE), str(tmp_path / "t"), str(tmp_path / "e"), fraction=0.05, seed=42)
    for part in ("t", "e"):
        kinds = {stratum(json.loads(line)["messages"]) for line in _lines(tmp_path / part)}
        assert CALLS in kinds


def test_duplicates_follow_their_first_copy(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"q{i % 5}"}, {"role": "assistant", "content": "a"}]}
        for i in range(40)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for seed in range(5):
        split_file(str(path), str(tmp_path / "t"), str(tmp_path / "e"), fraction=0.3, seed=seed)
        assert not set(_lines(tmp_path / "t")) & set(_lines(tmp_path / "e"))


def test_choose_eval_keeps_one_of_each_stratum() -> None:
    strata = bytearray([0] * 100 + [2] * 3)
    chosen = choose_eval(strata, 0.01, seed=0)
    assert sum(1 for i in chosen if strata[i] == 2) == 1 and sum(1 for i in chosen if strata[i] == 0) == 1


def test_cli(tmp_path: Path) -> None:
    source = tmp_path / "g.json"
    source.write_bytes(SAMPLE.read_bytes())
    result = CliRunner().invoke(app, ["split", str(source), "--eval", "0.2", "--json"])
    assert result.exit_code == 1  # the sample keeps rejected rows
    summary = json.loads(result.stdout)
    assert Path(summary["train_path"]) == tmp_path / "g.train.jsonl"
    assert summary["train"] + summary["eval"] == 19 and summary["rejected"] == 5
    runner = CliRunner()
    assert runner.invoke(app, ["split", str(source), "--eval", "1.5"]).exit_code == 2
    assert runner.invoke(app, ["split", "-"]).exit_code == 2
    refused = runner.invoke(app, ["split", str(source), "--train", str(source)])
    assert refused.exit_code == 2 and "input" in refused.output
