"""Benchmark: glmdata.render vs transformers' apply_chat_template(tokenize=False).

Renders every converted row of glaive_toolcall_zh_1k.json with both, in the same process,
several times each (interleaved), checks the outputs are identical, prints min/median seconds
per pass and per row for each contender and the speed ratio, and writes the table into the
"render" section of bench/RESULTS.md. "cold tools cache" empties glmdata's cache of serialized
tool blocks before each pass, as for a single pass over a dataset.

    .venv/bin/python bench/bench_render.py [--repeats 7] [--data PATH] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "glaive_toolcall_zh_1k.json"
RESULTS = ROOT / "bench" / "RESULTS.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()

    import transformers

    from glmdata.convert import convert_file
    from glmdata.render import load_template, render

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_tokenizer import build_tiny_tokenizer

    rows = [r.row["messages"] for r in convert_file(args.data) if r.row is not None]
    template = load_template()
    tokenizer = build_tiny_tokenizer(template.text)

    def ours(add_generation_prompt: bool) -> list[str]:
        return [render(m, add_generation_prompt=add_generation_prompt) for m in rows]

    def theirs(add_generation_prompt: bool) -> list[str]:
        return [
            tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=add_generation_prompt) for m in rows
        ]

    for flag in (False, True):
        if ours(flag) != theirs(flag):
            print("outputs differ: fix render before benchmarking", file=sys.stderr)
            return 1

    def ours_cold(add_generation_prompt: bool) -> list[str]:
        # One pass over a dataset as `glmdata render` does it: tool blocks are serialized once
        # per distinct tools list within the pass, none are left from earlier passes.
        template._fast._tools_cache.clear()
        return ours(add_generation_prompt)

    contenders = {
        "glmdata.render": ours,
        "glmdata.render, cold tools cache": ours_cold,
        "apply_chat_template": theirs,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():  # interleaved, so drift affects both alike
            start = time.perf_counter()
            fn(False)
            times[name].append(time.perf_counter() - start)

    n = len(rows)
    lines = [
        f"Rows: {n} converted rows of `{args.data.name}`, add_generation_prompt=False, "
        f"{args.repeats} passes each, interleaved, same process. Outputs identical (checked with and without "
        "add_generation_prompt).",
        f"Python {platform.python_version()}, transformers {transformers.__version__}, {platform.machine()}, "
        f"{date.today().isoformat()}.",
        "",
        "| contender | min s/pass | median s/pass | median µs/row |",
        "|---|---|---|---|",
    ]
    for name, ts in times.items():
        lines.append(
            f"| {name} | {min(ts):.4f} | {statistics.median(ts):.4f} | {statistics.median(ts) / n * 1e6:.1f} |"
        )
    lines.append("")
    for name in ("glmdata.render", "glmdata.render, cold tools cache"):
        ratio_min = min(times["apply_chat_template"]) / min(times[name])
        ratio_median = statistics.median(times["apply_chat_template"]) / statistics.median(times[name])
        lines.append(
            f"Speed-up of {name} over apply_chat_template: {ratio_min:.1f}x (min), {ratio_median:.1f}x (median)."
        )
    lines += ["", "Target: >= 3x."]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        _write_section(RESULTS, "render", table + "\n\nReproduce: `.venv/bin/python bench/bench_render.py`\n")
    return 0


def _write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the ``## name`` section of a Markdown file, leaving other sections alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    section = f"## {name}\n\n{body}"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
