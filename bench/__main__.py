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
from bench.suite import SECTIONS, Context, missing, run_section
from bench.workload import SOURCE

SIZES = ("rows", "repeats", "memory_rows", "startup_runs", "workers_rows")
FULL = {
    "rows": 20_000,
    "repeats": 5,
    "memory_rows": "10000,100000,1000000",
    "startup_runs": 10,
    "workers_rows": 100_000,
}
QUICK = {"rows": 2000, "repeats": 3, "memory_rows": "2000,20000", "startup_runs": 5, "workers_rows": 0}


def section_names(text: str | None) -> list[str]:
    """The sections named in a comma-separated list; exits on an unknown one."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    return names


def row_counts(text: str) -> list[int]:
    return sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="glmdata benchmarks: tokenize + masks against the bare encode, raw file to token ids against "
        "the tutorial, convert against the JSON floor, memory, workers, start-up, size, render. "
        "Writes bench/RESULTS.md and bench/results.json.",
    )
    parser.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)}); default all")
    parser.add_argument("--skip", help="comma-separated sections to leave out")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small and fast: {QUICK['rows']:,} rows, {QUICK['repeats']} passes, memory at {QUICK['memory_rows']} "
        "rows, no large workers file; does not write RESULTS.md unless --write",
    )
    parser.add_argument("--rows", type=int, help=f"workload rows (default {FULL['rows']:,})")
    parser.add_argument("--repeats", type=int, help=f"timed passes per contender (default {FULL['repeats']})")
    parser.add_argument("--memory-rows", help=f"row counts for the memory section (default {FULL['memory_rows']})")
    parser.add_argument("--startup-runs", type=int, help=f"runs per start-up command (default {FULL['startup_runs']})")
    parser.add_argument(
        "--workers-rows",
        type=int,
        help=f"the larger file of the workers section, rows (default {FULL['workers_rows']:,}; 0: none)",
    )
    parser.add_argument(
        "--repeat-tools",
        action="store_true",
        help="keep tool declarations identical across replicas (cache-friendly); default varies them",
    )
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"the Glaive file to replicate (default {SOURCE})")
    parser.add_argument("--workdir", type=Path, help="where to write the workload (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", help="write bench/RESULTS.md even in quick mode")
    write.add_argument("--no-write", action="store_true", help="print only, do not write bench/RESULTS.md")
    parser.add_argument("--rewrite", action="store_true", help="run nothing: write RESULTS.md again from results.json")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key in SIZES:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.rewrite:
        report.save(report.load())
        print(f"wrote {report.RESULTS_MD}", file=sys.stderr)
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    only, skip = section_names(args.only), section_names(args.skip)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="glmdata-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        work,
        rows=args.rows,
        repeats=args.repeats,
        log=log,
        quick=args.quick,
        memory_rows=row_counts(args.memory_rows),
        startup_runs=args.startup_runs,
        workers_rows=args.workers_rows,
        repeat_tools=args.repeat_tools,
        source=args.source,
    )
    selected = []
    for name in SECTIONS:
        if (only and name not in only) or name in skip:
            continue
        reason = missing(name, ctx)
        if reason:
            log(f"skipping {name}: {reason}")
        else:
            selected.append(name)
    started = time.perf_counter()
    store = report.load()
    store["machine"] = report.machine()
    try:
        for name in selected:
            log(f"[{name}]")
            section = run_section(name, ctx)
            if args.repeat_tools:
                section.setdefault("notes", []).append("workload built with --repeat-tools")
            store["sections"][name] = section
            print("\n".join(report.section_markdown(section)) + "\n")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("## Summary\n")
    print("\n".join(report.summary_table({"sections": {k: store["sections"][k] for k in selected}})))
    if args.write or (not args.quick and not args.no_write):
        report.save(store)
        log(f"wrote {report.RESULTS_MD} and {report.RESULTS_JSON}")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
