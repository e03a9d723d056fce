"""``python -m bench``: run glmdata's benchmark suite and write bench/RESULTS.md.

Run from the repository root with the project's environment, e.g. ``.venv/bin/python -m bench``.
See bench/README.md for what each section measures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.suite import SECTIONS, TOKENIZER_DIR, Context, prepare, run_section

QUICK = {"rows": 2000, "repeats": 3, "memory_rows": "2000,20000", "startup_runs": 5, "workers_rows": 0}
FULL = {"rows": 20_000, "repeats": 5, "memory_rows": "10000,100000,1000000", "startup_runs": 10, "workers_rows": 100_000}


def _names(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="glmdata benchmarks: throughput vs the tutorial pipeline and the JSON floor, render, "
        "tokenize + masks, memory, workers, start-up. Writes bench/RESULTS.md.",
    )
    parser.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)}); default all")
    parser.add_argument("--skip", help="comma-separated sections to leave out")
    parser.add_argument("--quick", action="store_true",
                        help=f"small and fast: {QUICK['rows']:,} rows, {QUICK['repeats']} passes, memory at {QUICK['memory_rows']} rows; "
                        "does not write RESULTS.md unless --write")
    parser.add_argument("--rows", type=int, help=f"workload rows (default {FULL['rows']:,})")
    parser.add_argument("--repeats", type=int, help=f"timed passes per contender (default {FULL['repeats']}), after one untimed warm-up")
    parser.add_argument("--memory-rows", help=f"row counts for the memory section (default {FULL['memory_rows']})")
    parser.add_argument("--startup-runs", type=int, help=f"runs per start-up command (default {FULL['startup_runs']})")
    parser.add_argument("--workers-rows", type=int, help=f"a second, larger size for the workers section (default {FULL['workers_rows']:,}; 0: none)")
    parser.add_argument("--repeat-tools", action="store_true",
                        help="keep tool declarations identical across replicas (cache-friendly); default varies them")
    parser.add_argument("--workdir", type=Path, help="where to write the workload (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", help="write bench/RESULTS.md even in quick mode")
    write.add_argument("--no-write", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--rewrite", action="store_true", help="run nothing: regenerate bench/RESULTS.md from bench/results.json")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key in ("rows", "repeats", "memory_rows", "startup_runs", "workers_rows"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rewrite:
        report.save(report.load())
        print(f"wrote {report.RESULTS_MD}", file=sys.stderr)
        return 0
    only, skip = _names(args.only), _names(args.skip)
    selected = [name for name in SECTIONS if (not only or name in only) and name not in skip]
    if "tokenize" in selected and not TOKENIZER_DIR.is_dir():
        print(f"skipping tokenize: no tokenizer at {TOKENIZER_DIR}", file=sys.stderr)
        selected.remove("tokenize")
    memory_rows = sorted({int(x.replace("_", "")) for x in args.memory_rows.split(",") if x.strip()})
    work = args.workdir or Path(tempfile.mkdtemp(prefix="glmdata-bench-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        data, messages = prepare(work, args.rows, repeat_tools=args.repeat_tools, log=log)
        ctx = Context(work, data, messages, args.repeats, args.quick, memory_rows, args.startup_runs, log, args.workers_rows)
        store = report.load()
        store["machine"] = report.machine()
        for name in selected:
            log(f"[{name}]")
            section = run_section(name, ctx)
            if args.repeat_tools:
                section.setdefault("notes", []).append("workload built with --repeat-tools (tool declarations repeat across replicas)")
            store["sections"][name] = section
            for line in report.section_markdown(section):
                print(line)
            print()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("## Summary\n")
    print("| section | comparison | measure | result | target | verdict |\n|---|---|---|---|---|---|")
    for row in report.summary_rows({"sections": {k: v for k, v in store["sections"].items() if k in selected}}):
        if row[1] != "not run":
            print("| " + " | ".join(row) + " |")
    write = args.write or (not args.quick and not args.no_write)
    if write:
        report.save(store)
        log(f"wrote {report.RESULTS_MD} and {report.RESULTS_JSON}")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
