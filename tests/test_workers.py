"""--workers N: the same results, order and bytes as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glmdata.checks import _simple_checker
from glmdata.cli import app
from glmdata.convert import Options, convert_file

DATA = Path(__file__).resolve().parents[1] / "data"


def _snapshot(path: Path, workers: int, options: Options = Options()) -> list[tuple]:
    return [
        (r.index, r.line, r.raw, r.format, r.row, r.encoded, [i.to_dict() for i in r.issues], r.repairs, r.rejected, r.duplicate_of, r.deduplicated)
        for r in convert_file(path, options, workers=workers)
    ]


def test_workers_give_identical_results(tmp_path: Path) -> None:
    # enough rows for several batches, with duplicates across batches and rejected rows
    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(rows[i % len(rows)], ensure_ascii=False) + "\n" for i in range(700)), encoding="utf-8")
    for options in (Options(), Options(dedupe=True, call_style="json")):
        one = _snapshot(big, 1, options)
        assert _snapshot(big, 2, options) == one
        assert _snapshot(big, 3, options) == one
    array = DATA / "glaive_toolcall_zh_sample.json"
    assert _snapshot(array, 2) == _snapshot(array, 1)


def test_cli_workers_write_the_same_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}.jsonl"
        result = runner.invoke(app, ["convert", str(DATA / "glaive_toolcall_zh_sample.json"), "-o", str(out), "--workers", workers, "--report", str(tmp_path / f"r{workers}.json")])
        assert result.exit_code == 1  # the sample keeps rejected rows
    assert (tmp_path / "out1.jsonl").read_bytes() == (tmp_path / "out2.jsonl").read_bytes()
    assert (tmp_path / "out1.rejects.jsonl").read_bytes() == (tmp_path / "out2.rejects.jsonl").read_bytes()
    r1, r2 = (json.loads((tmp_path / f"r{w}.json").read_text()) for w in "12")
    assert r1 == r2
    assert runner.invoke(app, ["validate", str(DATA / "alpaca_en_sample.json"), "--workers", "2"]).exit_code == 0
    assert runner.invoke(app, ["validate", str(DATA / "alpaca_en_sample.json"), "--workers", "0"]).exit_code == 2


def test_simple_argument_checker_agrees_with_jsonschema() -> None:
    from jsonschema import Draft202012Validator

    schemas = [
        {"type": "string"}, {"type": "integer"}, {"type": "number", "description": "x"}, {"type": "boolean"},
        {"type": "array", "items": {"type": "string"}}, {"type": "object"}, {"type": ["string", "null"]},
        {"type": "string", "enum": ["a", "b"]}, {"enum": ["a", True, None]}, {"type": "array"},
        {"type": "array", "items": {"type": "integer", "enum": [1]}},  # numeric enum: 1 == 1.0, True != 1
        {"type": "string", "minLength": 2},  # not simple: left to jsonschema
    ]
    values = ["a", "b", "", 0, 1, 1.0, 1.5, True, False, None, [], ["a"], [1, "a"], {}, {"a": 1}]
    for schema in schemas:
        check = _simple_checker(schema)
        if schema.get("minLength"):
            assert check is None
            continue
        assert check is not None, schema
        validator = Draft202012Validator(schema)
        for value in values:
            assert check(value) == validator.is_valid(value), (schema, value)



@pytest.mark.parametrize("flags", [[], ["--dedupe"], ["--strict"], ["--strict", "--dedupe"]], ids=["default", "dedupe", "strict", "strict-dedupe"])
def test_commands_convert_in_chunks_exactly_as_convert_file_row_by_row(tmp_path: Path, flags: list[str], monkeypatch) -> None:
    """convert/validate go through convert_chunks (whole batches, converted where the worker is);
    output, rejects and report must equal convert_file + one Report.add per row, for 1, 2 and 3
    workers, with duplicates across batches and broken rows among them; blocks of 64 kB, so that
    many are in flight and this process converts some of them itself."""
    import glmdata.convert

    monkeypatch.setattr(glmdata.convert, "BLOCK_BYTES", 64 << 10)
    from glmdata.io import dump_row
    from glmdata.report import Report

    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    lines = [json.dumps(rows[i % len(rows)], ensure_ascii=False) for i in range(700)]
    lines[300] = '{"conversations": ['  # broken in the second batch
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = Options(strict="--strict" in flags, dedupe="--dedupe" in flags)
    report, out, rejects = Report(str(source)), b"", b""
    for result in convert_file(source, options):
        report.add(result)
        if result.ok:
            out += result.encoded + b"\n"
        elif result.rejected:
            rejects += dump_row(result.reject_record(str(source)))
    expected_report = json.dumps(report.to_dict(), indent=2)
    runner = CliRunner()
    for workers in ("1", "2", "3"):
        target = tmp_path / f"out{workers}.jsonl"
        args = ["convert", str(source), "-o", str(target), "--workers", workers, "--report", str(tmp_path / f"r{workers}.json"), *flags]
        assert runner.invoke(app, args).exit_code == 1
        assert target.read_bytes() == out
        assert (tmp_path / f"out{workers}.rejects.jsonl").read_bytes() == rejects
        assert json.dumps(json.loads((tmp_path / f"r{workers}.json").read_text(encoding="utf-8")), indent=2) == expected_report
        checked = runner.invoke(app, ["validate", str(source), "--workers", workers, "--json", *flags])
        assert checked.exit_code == 1 and json.loads(checked.stdout) == report.to_dict()


def test_pools_leave_the_switch_interval_as_they_found_it(tmp_path: Path) -> None:
    """The pool lowers the GIL switch interval while it runs; overlapping pools (two convert_file
    generators read in turn) must leave the caller's own interval in place."""
    import sys

    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(rows[i % len(rows)], ensure_ascii=False) + "\n" for i in range(40)), encoding="utf-8")
    before = sys.getswitchinterval()
    first, second = convert_file(path, workers=2), convert_file(path, workers=2)
    next(first)
    next(second)
    assert sys.getswitchinterval() < before
    list(first)
    assert sys.getswitchinterval() < before  # the second pool still runs
    list(second)
    assert sys.getswitchinterval() == before
