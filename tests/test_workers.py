"""--workers N: the same results, order and bytes as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glmdata.cli import app
from glmdata.convert import Options, convert_file

DATA = Path(__file__).resolve().parents[1] / "data"


def _snapshot(path: Path, workers: int, options: Options) -> list[tuple]:
    return [
        (
            r.index,
            r.line,
            r.raw,
            r.format,
            r.row,
            r.encoded,
            [i.to_dict() for i in r.issues],
            r.repairs,
            r.rejected,
            r.duplicate_of,
            r.deduplicated,
        )
        for r in convert_file(path, options, workers=workers)
    ]


def test_workers_give_identical_results(tmp_path: Path) -> None:
    # enough rows for several batches, with duplicates across batches and rejected rows
    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    big = tmp_path / "big.jsonl"
    big.write_text(
        "".join(json.dumps(rows[i % len(rows)], ensure_ascii=False) + "\n" for i in range(700)), encoding="utf-8"
    )
    for options in (Options(), Options(dedupe=True, call_style="json")):
        one = _snapshot(big, 1, options)
        assert _snapshot(big, 2, options) == one
        assert _snapshot(big, 3, options) == one
    array = DATA / "glaive_toolcall_zh_sample.json"
    assert _snapshot(array, 2, Options()) == _snapshot(array, 1, Options())


def test_cli_workers_write_the_same_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}.jsonl"
        result = runner.invoke(
            app,
            [
                "convert",
                str(DATA / "glaive_toolcall_zh_sample.json"),
                "-o",
                str(out),
                "--workers",
                workers,
                "--report",
                str(tmp_path / f"r{workers}.json"),
            ],
        )
        assert result.exit_code == 1  # the sample keeps rejected rows
    assert (tmp_path / "out1.jsonl").read_bytes() == (tmp_path / "out2.jsonl").read_bytes()
    assert (tmp_path / "out1.rejects.jsonl").read_bytes() == (tmp_path / "out2.rejects.jsonl").read_bytes()
    r1, r2 = (json.loads((tmp_path / f"r{w}.json").read_text()) for w in "12")
    assert r1 == r2
    assert runner.invoke(app, ["validate", str(DATA / "alpaca_en_sample.json"), "--workers", "2"]).exit_code == 0
    assert runner.invoke(app, ["validate", str(DATA / "alpaca_en_sample.json"), "--workers", "0"]).exit_code == 2


@pytest.mark.parametrize(
    "flags",
    [[], ["--dedupe"], ["--strict"], ["--strict", "--dedupe"]],
    ids=["default", "dedupe", "strict", "strict-dedupe"],
)
def test_commands_write_and_count_exactly_what_convert_file_gives(tmp_path: Path, flags: list[str]) -> None:
    """convert and validate, with 1, 2 and 3 workers: output, rejects file and report equal
    convert_file's results written one by one with one Report.add per row; with duplicates across
    the blocks of lines that go to the workers, and a broken row among them."""
    from glmdata.jsontext import compact
    from glmdata.report import Report

    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    lines = [json.dumps(rows[i % len(rows)], ensure_ascii=False) for i in range(700)]  # ~1.5 MB: several blocks
    lines[300] = '{"conversations": ['  # broken, far from the first block
    source = tmp_path / "big.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = Options(strict="--strict" in flags, dedupe="--dedupe" in flags)
    report, out, rejects = Report(str(source)), b"", b""
    for result in convert_file(source, options):
        report.add(result)
        if result.ok:
            out += result.encoded + b"\n"
        elif result.rejected:
            rejects += compact(result.reject_record(str(source))) + b"\n"
    assert report.rows_in == 700 and rejects.count(b"\n") == report.rejected > 0
    expected_report = json.dumps(report.to_dict(), indent=2)
    runner = CliRunner()
    for workers in ("1", "2", "3"):
        target = tmp_path / f"out{workers}.jsonl"
        report_path = tmp_path / f"r{workers}.json"
        args = ["convert", str(source), "-o", str(target), "--workers", workers, "--report", str(report_path), *flags]
        assert runner.invoke(app, args).exit_code == 1
        assert target.read_bytes() == out
        assert (tmp_path / f"out{workers}.rejects.jsonl").read_bytes() == rejects
        assert json.dumps(json.loads(report_path.read_text(encoding="utf-8")), indent=2) == expected_report
        checked = runner.invoke(app, ["validate", str(source), "--workers", workers, "--json", *flags])
        assert checked.exit_code == 1 and json.loads(checked.stdout) == report.to_dict()


def test_workers_leave_the_interpreter_settings_alone(tmp_path: Path) -> None:
    """Converting in processes changes nothing interpreter-wide (the GIL switch interval among
    them), also while two convert_file generators run side by side."""
    import sys

    rows = json.loads((DATA / "glaive_toolcall_zh_sample.json").read_text(encoding="utf-8"))
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(json.dumps(rows[i % len(rows)], ensure_ascii=False) + "\n" for i in range(40)), encoding="utf-8"
    )
    before = sys.getswitchinterval()
    first, second = convert_file(path, workers=2), convert_file(path, workers=2)
    next(first)
    next(second)
    assert sys.getswitchinterval() == before
    assert len(list(first)) == len(list(second)) == 39
    assert sys.getswitchinterval() == before
