"""Regenerate the golden conversions in tests/golden/convert/ (run from anywhere).

    python tests/golden/regen.py            # rewrite every golden file
    python tests/golden/regen.py --check    # exit 1 when one differs (what the tests do)

For each sample in data/: ``<name>.jsonl`` holds the output rows exactly as ``glmdata convert``
writes them, and ``<name>.report.json`` the account (rows in / out / rejected / deduplicated,
repairs and checks with their example rows, and every rejected row with the codes and paths that
rejected it). The golden files were read by eye when they were made; a change to them is a change
in behaviour and must be reviewed the same way (``git diff tests/golden``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "data"
OUT = HERE / "convert"

# golden name -> (sample file in data/, Options keyword arguments)
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "glaive": ("glaive_toolcall_zh_sample.json", {}),
    "glaive.call-style-json": ("glaive_toolcall_zh_sample.json", {"call_style": "json"}),
    "chatglm3": ("chatglm3_toolcall_sample.json", {}),
    "openai": ("openai_toolcall_sample.jsonl", {}),
    "messages_arrow_nulls": ("messages_arrow_nulls_sample.jsonl", {}),
    "advertisegen": ("advertisegen_messages_sample.jsonl", {}),
    "alpaca_zh": ("alpaca_zh_sample.json", {}),
    "alpaca_en": ("alpaca_en_sample.json", {}),
    "identity": ("identity_sample.json", {}),
    "reason_tool_use_demo_50": ("reason_tool_use_demo_50.jsonl", {}),
    "reason_tool_use_demo_50.glm-4.5": ("reason_tool_use_demo_50.jsonl", {"template": "glm-4.5"}),
}


def produce(name: str) -> tuple[bytes, str]:
    """``(jsonl bytes, report JSON text)`` for one golden sample, computed by the current code."""
    from glmdata.convert import Options, convert_file
    from glmdata.io import dump_row
    from glmdata.report import Report

    sample, options = SAMPLES[name]
    report = Report(sample)
    rows = bytearray()
    rejects = []
    for result in convert_file(DATA / sample, Options(**options)):
        report.add(result)
        if result.ok:  # with a template: the template's input, as convert writes it
            rows += result.encoded + b"\n" if "template" in options else dump_row(result.row)
        elif result.rejected:
            record = result.reject_record()
            rejects.append(
                {
                    "index": record["index"],
                    "line": record.get("line"),
                    "errors": [{"code": e["code"], "path": e["path"]} for e in record["errors"]],
                }
            )
    full = report.to_dict()
    summary = {
        "sample": sample,
        "options": options,
        **{key: full[key] for key in ("rows_in", "rows_out", "rejected", "deduplicated", "formats")},
        "repairs": {k: {"rows": v["rows"], "examples": v["examples"]} for k, v in sorted(full["repairs"].items())},
        "checks": {k: {"count": v["count"], "examples": v["examples"]} for k, v in sorted(full["checks"].items())},
        "rejects": rejects,
    }
    return bytes(rows), json.dumps(summary, ensure_ascii=False, indent=2) + "\n"


def paths(name: str) -> tuple[Path, Path]:
    return OUT / f"{name}.jsonl", OUT / f"{name}.report.json"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    check = "--check" in argv
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        rows, report = produce(name)
        rows_path, report_path = paths(name)
        if check:
            if (
                not rows_path.is_file()
                or rows_path.read_bytes() != rows
                or report_path.read_text(encoding="utf-8") != report
            ):
                stale.append(name)
            continue
        rows_path.write_bytes(rows)
        report_path.write_text(report, encoding="utf-8")
        count = rows.count(b"\n")
        print(f"wrote {rows_path.relative_to(REPO)} ({count} rows) and {report_path.name}")
    if stale:
        print("stale golden files:", ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
