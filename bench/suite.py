"""The sections of ``python -m bench``: one function per number of issue 15 ("Numbers that must hold").

Each section returns a dict (see ``bench.report``): its contenders' samples, the checks that the
outputs agree, the ratios against their targets (``passed`` None: reported, no target), and notes.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.measure import (
    BIN,
    PYTHON,
    CommandFailed,
    OtherLoad,
    Samples,
    glmdata_command,
    interleaved,
    run_command,
    run_task,
)
from bench.report import revision, stamp

SHARED = wl.REPO.parent / "shared"
TOKENIZER_DIR = SHARED / "tokenizer" / "glm-4-9b-chat"
# A Glaive file inside the repository: what start-up renders, so that section needs nothing outside.
SAMPLE = wl.REPO / "data" / "glaive_toolcall_zh_sample.json"
MB = 1_000_000
MEMORY_LIMIT = 300 * MB
BATCH = 1000  # rows per tokenizer batch, for every contender that batches
# The fastest whole-command floor: parse and serialize each line with orjson, nothing else.
FLOOR_SCRIPT = (
    "import sys, orjson\n"
    "loads, dumps = orjson.loads, orjson.dumps\n"
    "with open(sys.argv[1], 'rb') as f, open(sys.argv[2], 'wb') as out:\n"
    "    for line in f:\n"
    "        out.write(dumps(loads(line)) + b'\\n')\n"
)
# Runs the glmdata CLI in this process, then lists the heavy modules it imported.
IMPORT_PROBE = (
    "import sys\n"
    "from glmdata.cli import main\n"
    "sys.argv = ['glmdata', *sys.argv[1:]]\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'datasets'))\n"
    "sys.__stderr__.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
)


@dataclass
class Context:
    """One run's settings, and its inputs, built when a section first needs them."""

    work: Path  #: temporary directory of this run
    rows: int
    repeats: int
    log: Callable[[str], None] = print
    quick: bool = False
    memory_rows: list[int] = field(default_factory=lambda: [10_000])
    startup_runs: int = 10
    workers_rows: int = 0  #: a second, larger size for the workers section (0: none)
    repeat_tools: bool = False
    source: Path = wl.SOURCE  #: the Glaive file the workload replicates
    tokenizer_dir: Path = TOKENIZER_DIR

    def stamp(self, **extra: Any) -> dict[str, Any]:
        return stamp(rows=f"{self.rows:,}", passes=self.repeats, **({"mode": "quick"} if self.quick else {}), **extra)

    @cached_property
    def data(self) -> wl.Workload:
        self.log(f"building the workload: {self.rows:,} rows of {self.source.name} in {self.work}")
        return wl.build(self.rows, self.work, repeat_tools=self.repeat_tools, source_path=self.source)

    @cached_property
    def messages(self) -> Path:
        """The workload converted by `glmdata convert` (GLM-4 messages JSONL)."""
        messages = self.work / "messages.jsonl"
        run_command([*glmdata_command(), "convert", str(self.data.jsonl), "-o", str(messages), "-q"], ok_codes=(0, 1))
        return messages

    @cached_property
    def tokenizers(self) -> dict[str, Path]:
        """The two kinds of one vocabulary: glm-4-9b-chat's tiktoken files, and the same tokenizer
        saved as a ``tokenizer.json`` directory (the layout glm-4-9b-chat-hf ships)."""
        saved = self.work / "tokenizer-json"
        if not (saved / "tokenizer.json").is_file():
            self.log(f"  saving {self.tokenizer_dir.name} as tokenizer.json in {saved}")
            run_task("save-tokenizer-json", self.tokenizer_dir, saved)
        return {"tiktoken files": self.tokenizer_dir, "tokenizer.json": saved}


def missing(name: str, ctx: Context) -> str | None:
    """Why section ``name`` cannot run here, or None."""
    if name in NEEDS_WORKLOAD and not ctx.source.is_file():
        return f"no workload source at {ctx.source}"
    if name in NEEDS_TOKENIZER and not ctx.tokenizer_dir.is_dir():
        return f"no tokenizer at {ctx.tokenizer_dir}"
    return None


def _samples(name: str, measure: str, rows: int | None, seconds: list[float]) -> dict[str, Any]:
    s = Samples(name, seconds)
    return {"name": name, "measure": measure, "rows": rows, "seconds": seconds, "min": s.min, "median": s.median}


def _ratio(label: str, measure: str, num: dict, den: dict, target: float | None, *, at_least: bool) -> dict[str, Any]:
    """``num / den`` on medians and on minimums. ``at_least``: the target is a minimum (a speed-up),
    else a maximum (a cost). No target: the ratio is reported, not judged."""
    median = num["median"] / den["median"]
    minimum = num["min"] / den["min"]
    sign = ">=" if at_least else "<="
    return {
        "label": label,
        "measure": measure,
        "value": f"{median:.2f}x ({minimum:.2f}x)",
        "median": median,
        "min": minimum,
        "target": "report" if target is None else f"{sign} {target:g}x",
        "passed": None if target is None else (median >= target if at_least else median <= target),
    }


def speedup(label: str, measure: str, theirs: dict, ours: dict, target: float | None = None) -> dict[str, Any]:
    return _ratio(label, measure, theirs, ours, target, at_least=True)


def cost(label: str, measure: str, ours: dict, floor: dict, target: float | None = None) -> dict[str, Any]:
    return _ratio(label, measure, ours, floor, target, at_least=False)


def _task_timer(results: list[dict], name: str, *args: Any, **options: Any) -> Callable[[], float]:
    def timed() -> float:
        result = run_task(name, *args, **options)
        results.append(result)
        return result["seconds"]

    return timed


def _command_timer(*argvs: list[str], stdout_path: Path | None = None, ok_codes=(0, 1)) -> Callable[[], float]:
    """Wall time of the commands run one after the other (a job done in steps)."""

    def timed() -> float:
        return sum(run_command(argv, stdout_path=stdout_path, ok_codes=ok_codes).wall for argv in argvs)

    return timed


def _same_bytes(*paths: Path) -> bool:
    first = paths[0].read_bytes()
    return all(path.read_bytes() == first for path in paths[1:])


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _slug(kind: str) -> str:
    return kind.replace(" ", "-").replace(".", "-")


# --- 1. tokenize + masks against the bare encode ------------------------------------------------


BARE = {
    "tiktoken files": 'tiktoken `encode_batch(texts, allowed_special="all")`',
    "tokenizer.json": "`tokenizer(texts, add_special_tokens=False)`",
}


def tokenize(ctx: Context) -> dict[str, Any]:
    rendered = ctx.work / "rendered.jsonl"
    run_task("spans", ctx.messages, rendered)
    runs: dict[str, list[dict]] = {}
    timers = {}
    for kind, directory in ctx.tokenizers.items():
        for task in ("encode-bare", "encode-masks"):
            runs[f"{task} {kind}"] = []
            timers[f"{task} {kind}"] = _task_timer(runs[f"{task} {kind}"], task, rendered, directory)
    # no warm-up round: the set-up above has read every file these passes read
    s = interleaved(timers, ctx.repeats, log=ctx.log)
    n = runs["encode-masks tiktoken files"][0]["rows"]
    contenders, ratios = [], []
    for kind in ctx.tokenizers:
        bare = _samples(f"{BARE[kind]}, {kind}", "in process", n, s[f"encode-bare {kind}"].seconds)
        ours = _samples(f"`glmdata.masks.encode_batch`, {kind}", "in process", n, s[f"encode-masks {kind}"].seconds)
        contenders += [bare, ours]
        ratios.append(cost(f"tokenize + masks relative to the bare encode, {kind}", "in process", ours, bare, 1.15))
    every = [result for results in runs.values() for result in results]
    masks = [result for key, results in runs.items() if key.startswith("encode-masks") for result in results]
    encoders = {kind: {r["encoder"] for r in runs[f"encode-bare {kind}"]} for kind in ctx.tokenizers}
    ours = {kind: {r["encoder"] for r in runs[f"encode-masks {kind}"]} for kind in ctx.tokenizers}
    return {
        "key": "tokenize",
        "title": "1. Tokenize + masks against the bare encode of the same text",
        "stamp": ctx.stamp(input="rendered converted rows", batch=f"{BATCH:,}", tokens=f"{every[0]['tokens']:,}"),
        "contenders": contenders,
        "checks": [
            {
                "ok": len({r["digest"] for r in every}) == 1,
                "label": f"the same token ids on all {n:,} rows, every contender, both kinds, every pass",
            },
            {"ok": len({r["labels"] for r in masks}) == 1, "label": "the same labels with both kinds, every pass"},
            {
                "ok": encoders == {"tiktoken files": {"tiktoken"}, "tokenizer.json": {"tokenizers"}},
                "label": "the bare encode ran on tiktoken for the tiktoken files, on tokenizers for tokenizer.json",
                "detail": ", ".join(f"{kind}: {'/'.join(sorted(e))}" for kind, e in encoders.items()),
            },
        ],
        "ratios": ratios,
        "notes": [
            "glmdata encoded with " + ", ".join(f"{'/'.join(sorted(e))} for the {kind}" for kind, e in ours.items())
        ],
    }


# --- 2. raw Glaive file to token ids and labels: the tutorial vs glmdata -------------------------


def _jsonl_rows(path: Path) -> list[tuple[list[int], list[int]]]:
    with open(path, "rb") as f:
        return [(row["input_ids"], row["labels"]) for row in map(json.loads, f)]


def _parquet_rows(path: Path) -> list[tuple[list[int], list[int]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["input_ids", "labels"])
    return list(zip(table.column("input_ids").to_pylist(), table.column("labels").to_pylist()))


def pipeline(ctx: Context) -> dict[str, Any]:
    n = ctx.rows
    src = str(ctx.data.json_array)
    timers = {}
    outputs: dict[str, dict[str, Path]] = {"tutorial": {}, "tutorial batched": {}, "glmdata": {}, "parquet": {}}
    for kind, directory in ctx.tokenizers.items():
        slug = _slug(kind)
        outputs["tutorial"][kind] = ctx.work / f"tutorial-{slug}.jsonl"
        outputs["tutorial batched"][kind] = ctx.work / f"tutorial-batched-{slug}.jsonl"
        outputs["glmdata"][kind] = ctx.work / f"glmdata-{slug}.jsonl"
        messages = ctx.work / f"pipeline-messages-{slug}.jsonl"
        tutorial = [PYTHON, "-m", "bench.tutorial", src, str(outputs["tutorial"][kind]), str(directory)]
        batched = [PYTHON, "-m", "bench.tutorial", src, str(outputs["tutorial batched"][kind]), str(directory)]
        timers[f"tutorial {kind}"] = _command_timer(tutorial, ok_codes=(0,))
        timers[f"tutorial batched {kind}"] = _command_timer([*batched, "--batch", str(BATCH)], ok_codes=(0,))
        timers[f"glmdata {kind}"] = _command_timer(
            [*glmdata_command(), "convert", src, "-o", str(messages), "-q"],
            [PYTHON, "-m", "bench.tokenize_file", str(messages), str(outputs["glmdata"][kind]), str(directory)],
        )
        outputs["parquet"][kind] = ctx.work / f"glmdata-{slug}.parquet"
        tokenize = ["tokenize", str(messages), "--tokenizer", str(directory), "-o", str(outputs["parquet"][kind])]
        timers[f"glmdata tokenize {kind}"] = _command_timer(
            [*glmdata_command(), "convert", src, "-o", str(messages), "-q"], [*glmdata_command(), *tokenize, "-q"]
        )
    passes = min(ctx.repeats, 3)
    s = interleaved(timers, passes, log=ctx.log)
    contenders, ratios = [], []
    for kind in ctx.tokenizers:
        tutorial = _samples(
            f"`python -m bench.tutorial`: formatting_func + apply_chat_template + a tokenizer call per row, {kind}",
            "whole process",
            n,
            s[f"tutorial {kind}"].seconds,
        )
        batched = _samples(
            f"the same with the tokenizer called on {BATCH:,} texts at a time, {kind}",
            "whole process",
            n,
            s[f"tutorial batched {kind}"].seconds,
        )
        ours = _samples(
            f"`glmdata convert` then `python -m bench.tokenize_file` (glmdata.masks.tokenize_batch), {kind}",
            "whole processes",
            n,
            s[f"glmdata {kind}"].seconds,
        )
        command = _samples(
            f"`glmdata convert` then `glmdata tokenize` (Parquet), {kind}",
            "whole processes",
            n,
            s[f"glmdata tokenize {kind}"].seconds,
        )
        contenders += [tutorial, batched, ours, command]
        ratios.append(speedup(f"speed-up of glmdata over the tutorial, {kind}", "whole processes", tutorial, ours, 3))
        ratios.append(
            speedup(
                f"speed-up of glmdata's commands over the tutorial, {kind}", "whole processes", tutorial, command, 3
            )
        )
        ratios.append(
            speedup(f"speed-up of glmdata over the tutorial batched, {kind}", "whole processes", batched, ours)
        )
    kinds = list(ctx.tokenizers)
    kept = _lines(outputs["glmdata"][kinds[0]])
    return {
        "key": "pipeline",
        "title": "2. Raw Glaive file to token ids and labels: the tutorial vs glmdata",
        "stamp": {**ctx.stamp(input="JSON array"), "passes": passes},
        "contenders": contenders,
        "checks": [
            {
                "ok": _same_bytes(*outputs["glmdata"].values()),
                "label": "glmdata: the same ids and labels with both kinds of tokenizer",
            },
            {
                "ok": all(_parquet_rows(outputs["parquet"][k]) == _jsonl_rows(outputs["glmdata"][k]) for k in kinds),
                "label": "glmdata tokenize: the same ids and labels as glmdata.masks.tokenize_batch, both kinds",
            },
            {
                "ok": _same_bytes(*outputs["tutorial"].values(), *outputs["tutorial batched"].values()),
                "label": "the tutorial: the same ids with both kinds, called per row or in batches",
            },
            {
                "ok": _lines(outputs["tutorial"][kinds[0]]) == n and 0 < kept <= n,
                "label": f"the tutorial tokenized all {n:,} rows, glmdata the {kept:,} rows convert kept",
            },
        ],
        "ratios": ratios,
        "notes": [
            "the tutorial loads a tokenizer.json with AutoTokenizer, the tiktoken files with glmdata's loader "
            "(transformers would run the model's remote code); glmdata always with glmdata.tokenizer.load_tokenizer"
        ],
    }


# --- 3. convert against the JSON floor ----------------------------------------------------------


def floor(ctx: Context) -> dict[str, Any]:
    n = ctx.rows
    src = str(ctx.data.jsonl)
    floor_runs: list[dict] = []
    convert_runs: list[dict] = []
    timers = {
        "floor": _task_timer(floor_runs, "floor", src, ctx.work / "floor.jsonl"),
        "convert": _task_timer(convert_runs, "convert", src, ctx.work / "convert.jsonl"),
        "floor command": _command_timer([PYTHON, "-c", FLOOR_SCRIPT, src, str(ctx.work / "floor-cmd.jsonl")]),
        "convert command": _command_timer(
            [*glmdata_command(), "convert", src, "-o", str(ctx.work / "convert-cmd.jsonl"), "-q"]
        ),
    }
    ctx.log("  warm-up (one pass each, untimed)")
    for timer in timers.values():
        timer()
    s = interleaved(timers, ctx.repeats, log=ctx.log)
    fl = _samples("orjson.loads + orjson.dumps per line, written", "in process", n, s["floor"].seconds)
    cv = _samples("glmdata convert_file, rows (their bytes) and rejects written", "in process", n, s["convert"].seconds)
    fl_cmd = _samples("`python -c '<orjson loop>' IN OUT`", "whole command", n, s["floor command"].seconds)
    cv_cmd = _samples("`glmdata convert IN.jsonl -o OUT -q`", "whole command", n, s["convert command"].seconds)
    return {
        "key": "floor",
        "title": "3. Convert against the JSON parse + serialize floor",
        "stamp": ctx.stamp(input="JSONL"),
        "contenders": [fl, cv, fl_cmd, cv_cmd],
        "checks": [
            {
                "ok": _same_bytes(ctx.work / "convert.jsonl", ctx.work / "convert-cmd.jsonl"),
                "label": "in-process convert writes the same bytes as the `glmdata convert` command",
            },
            {
                "ok": {r["rows"] for r in floor_runs + convert_runs} == {n},
                "label": f"every pass read all {n:,} rows",
                "detail": f"convert kept {convert_runs[0]['outputs']:,}",
            },
        ],
        "ratios": [
            cost("cost of convert relative to the floor", "in process", cv, fl, 4),
            cost("cost of convert relative to the floor", "whole command", cv_cmd, fl_cmd, 4),
        ],
    }


# --- 4. memory ----------------------------------------------------------------------------------


def memory(ctx: Context) -> dict[str, Any]:
    mem_dir = ctx.work / "memory"
    mem_dir.mkdir(exist_ok=True)
    per_row = wl.average_row_bytes(ctx.data.jsonl)
    contenders = []
    notes = []
    for size in ctx.memory_rows:
        # JSONL + indented JSON array (~1.2x) + the converted output (~1x) + 1 GB to spare.
        needed = int(size * per_row * 3.4) + 1_000_000_000
        free = shutil.disk_usage(mem_dir).free
        if needed > free:
            notes.append(f"{size:,} rows skipped: needs about {needed / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free")
            ctx.log(f"  {notes[-1]}")
            continue
        ctx.log(f"  generating {size:,} rows (JSONL and JSON array)")
        jsonl, array = wl.write_files(size, mem_dir, repeat_tools=ctx.repeat_tools, source_path=ctx.source)
        assert array is not None
        out = mem_dir / "out.jsonl"
        commands = [
            ("glmdata convert", "JSONL", [*glmdata_command(), "convert", str(jsonl), "-o", str(out), "-q"], None),
            ("glmdata convert", "JSON array", [*glmdata_command(), "convert", str(array), "-o", str(out), "-q"], None),
            ("glmdata stats", "JSONL", [*glmdata_command(), "stats", str(jsonl), "--json"], mem_dir / "stats.json"),
        ]
        try:
            for name, kind, argv, stdout_path in commands:
                run = run_command(argv, stdout_path=stdout_path, ok_codes=(0, 1), own_peak=True)
                contenders.append(
                    {"name": f"`{name}`", "input": kind, "rows": size, "max_rss": run.max_rss, "wall": run.wall}
                )
                ctx.log(f"    {name} {kind} {size:,} rows: peak RSS {run.max_rss / MB:,.0f} MB, {run.wall:.1f} s")
        finally:
            for path in (jsonl, array, out, mem_dir / "out.rejects.jsonl", mem_dir / "stats.json"):
                path.unlink(missing_ok=True)
    return {
        "key": "memory",
        "kind": "memory",
        "title": "4. Memory: peak RSS of convert and stats as the input grows",
        "stamp": stamp(sizes=", ".join(f"{s:,}" for s in ctx.memory_rows), **({"mode": "quick"} if ctx.quick else {})),
        "contenders": contenders,
        "ratios": memory_ratios(contenders),
        "notes": notes,
    }


def memory_ratios(contenders: list[dict]) -> list[dict[str, Any]]:
    """For each command and input: the highest peak against the limit, and how much it grew."""
    ratios = []
    for name, kind in dict.fromkeys((c["name"], c["input"]) for c in contenders):
        runs = [c for c in contenders if (c["name"], c["input"]) == (name, kind)]
        worst = max(c["max_rss"] for c in runs)
        growth = runs[-1]["max_rss"] - runs[0]["max_rss"]
        ratios.append(
            {
                "label": f"peak RSS of {name} on {kind}, {runs[0]['rows']:,} to {runs[-1]['rows']:,} rows",
                "measure": "child process",
                "value": f"max {worst / MB:,.0f} MB (grows {growth / MB:+,.0f} MB)",
                "target": f"< {MEMORY_LIMIT // MB} MB",
                "passed": worst < MEMORY_LIMIT,
            }
        )
    return ratios


# --- 5. workers ---------------------------------------------------------------------------------


def workers(ctx: Context) -> dict[str, Any]:
    n = ctx.rows
    src = str(ctx.data.jsonl)
    out = {w: ctx.work / f"workers{w}.jsonl" for w in (1, 2)}
    inproc = {w: ctx.work / f"inproc{w}.jsonl" for w in (1, 2)}
    runs: dict[int, list[dict]] = {1: [], 2: []}
    timers = {}
    for w in (1, 2):
        timers[f"convert --workers {w}"] = _command_timer(
            [*glmdata_command(), "convert", src, "-o", str(out[w]), "-q", "--workers", str(w)]
        )
        timers[f"convert_file(workers={w})"] = _task_timer(runs[w], "convert", src, inproc[w], workers=w)
    ctx.log("  warm-up (one pass each, untimed)")
    for timer in timers.values():
        timer()
    s = interleaved(timers, ctx.repeats, log=ctx.log)
    commands = [
        _samples(f"`glmdata convert --workers {w}`", "whole command", n, s[f"convert --workers {w}"].seconds)
        for w in (1, 2)
    ]
    in_process = [
        _samples(f"convert_file(workers={w}), rows written", "in process", n, s[f"convert_file(workers={w})"].seconds)
        for w in (1, 2)
    ]
    checks = [
        {"ok": _same_bytes(out[1], out[2]), "label": "convert: output identical with 1 and 2 workers"},
        {"ok": _same_rejects(out[1], out[2]), "label": "convert: rejects identical with 1 and 2 workers"},
        {
            "ok": _same_bytes(inproc[1], inproc[2], out[1]),
            "label": "convert_file(workers=2): the rows of 1 worker and of the command, in order",
        },
        {
            "ok": {r["rows"] for done in runs.values() for r in done} == {n},
            "label": f"convert_file, 1 and 2 workers: every pass read all {n:,} rows",
        },
    ]
    ratios = [
        speedup(f"speed-up of `convert --workers 2` over 1 at {n:,} rows", "whole command", *commands),
        speedup(f"speed-up of convert_file(workers=2) over 1 at {n:,} rows", "in process", *in_process),
    ]
    contenders = [*commands, *in_process]
    if ctx.workers_rows > n:
        more, check, ratio = _workers_at(ctx, ctx.workers_rows)
        contenders += more
        checks.append(check)
        ratios.insert(0, ratio)
    return {
        "key": "workers",
        "title": "5. Scale-out: --workers 2 vs 1",
        "stamp": ctx.stamp(input="JSONL", **({"large": f"{ctx.workers_rows:,}"} if ctx.workers_rows > n else {})),
        "contenders": contenders,
        "checks": checks,
        "ratios": ratios,
    }


def _same_rejects(a: Path, b: Path) -> bool:
    ra, rb = (p.with_name(p.name.removesuffix(".jsonl") + ".rejects.jsonl") for p in (a, b))
    return _same_bytes(ra, rb) if ra.exists() and rb.exists() else ra.exists() == rb.exists()


def _workers_at(ctx: Context, size: int) -> tuple[list[dict], dict, dict]:
    """`convert --workers 1` and `2` on a larger file of the same workload (the target's size):
    three passes at most (the file is large); the file is deleted after."""
    directory = ctx.work / f"workers-{size}"
    ctx.log(f"  generating {size:,} rows (JSONL)")
    jsonl, _ = wl.write_files(size, directory, json_array=False, repeat_tools=ctx.repeat_tools, source_path=ctx.source)
    try:
        out = {w: directory / f"out{w}.jsonl" for w in (1, 2)}
        timers = {
            f"convert --workers {w} ({size:,} rows)": _command_timer(
                [*glmdata_command(), "convert", str(jsonl), "-o", str(out[w]), "-q", "--workers", str(w)]
            )
            for w in (1, 2)
        }
        s = interleaved(timers, min(ctx.repeats, 3), log=ctx.log)
        samples = [_samples(f"`glmdata {name}`", "whole command", size, v.seconds) for name, v in s.items()]
        check = {
            "ok": _same_bytes(out[1], out[2]) and _same_rejects(out[1], out[2]),
            "label": f"convert at {size:,} rows: output and rejects identical with 1 and 2 workers",
        }
        ratio = speedup(f"speed-up of `convert --workers 2` over 1 at {size:,} rows", "whole command", *samples, 1.5)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return samples, check, ratio


# --- 6. start-up --------------------------------------------------------------------------------


def startup(ctx: Context) -> dict[str, Any]:
    glmdata = glmdata_command()
    sample = str(SAMPLE)
    render_row = "`glmdata render SAMPLE --row 0` (a Glaive file, converted on the fly)"
    commands = {
        "`python -c pass` (interpreter alone, for scale)": [PYTHON, "-c", "pass"],
        "`python -c 'import glmdata'`": [PYTHON, "-c", "import glmdata"],
        "`glmdata --help`": [*glmdata, "--help"],
        render_row: [*glmdata, "render", sample, "--row", "0"],
    }
    timers = {name: _command_timer(argv, ok_codes=(0,)) for name, argv in commands.items()}
    for timer in timers.values():  # warm-up: .pyc files, page cache
        timer()
    s = interleaved(timers, ctx.startup_runs, log=ctx.log)
    contenders = [_samples(name, "whole command", None, v.seconds) for name, v in s.items()]
    checks = []
    for label, args in (
        ("glmdata --help", ["--help"]),
        ("glmdata render SAMPLE --row 0", ["render", sample, "--row", "0"]),
    ):
        result = subprocess.run([PYTHON, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, cwd=wl.REPO)
        heavy = next((line[6:] for line in result.stderr.splitlines() if line.startswith("HEAVY=")), None)
        detail = "probe failed" if heavy is None else (f"imported {heavy[:200]}" if heavy else "")
        checks.append(
            {"ok": heavy == "", "label": f"`{label}` imports none of torch, transformers, datasets", "detail": detail}
        )
    help_median = s["`glmdata --help`"].median
    render_median = s[render_row].median
    return {
        "key": "startup",
        "title": "6. Start-up: wall time of short commands",
        "stamp": stamp(runs=ctx.startup_runs, sample=SAMPLE.name, **({"mode": "quick"} if ctx.quick else {})),
        "contenders": contenders,
        "checks": checks,
        "ratios": [
            {
                "label": "`glmdata --help` median wall time",
                "measure": "whole command",
                "value": f"{help_median * 1000:.0f} ms",
                "target": "< 0.5 s",
                "passed": help_median < 0.5,
            },
            {
                "label": "`glmdata render SAMPLE --row 0` median wall time",
                "measure": "whole command",
                "value": f"{render_median * 1000:.0f} ms",
                "target": "report",
                "passed": None,
            },
        ],
    }


# --- 7. size ------------------------------------------------------------------------------------

LINE_LIMIT = 5000


def formatted_lines(package: Path, line_length: int = 120) -> dict[str, int]:
    """Lines of each of ``package``'s ``*.py`` files (by path inside it) after ``ruff format
    --line-length`` (on a copy: the checkout is not touched)."""
    ruff = BIN / "ruff" if (BIN / "ruff").exists() else Path(shutil.which("ruff") or "ruff")
    with tempfile.TemporaryDirectory(prefix="glmdata-size-") as tmp:
        copy = Path(tmp) / package.name
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(
            [str(ruff), "format", "--quiet", "--isolated", "--line-length", str(line_length), str(copy)], check=True
        )
        return {
            str(f.relative_to(copy)): len(f.read_text(encoding="utf-8").splitlines())
            for f in sorted(copy.rglob("*.py"))
        }


def size(ctx: Context) -> dict[str, Any]:
    per_file = formatted_lines(wl.REPO / "glmdata")
    lines, files = sum(per_file.values()), len(per_file)
    largest = sorted(per_file.items(), key=lambda item: -item[1])[:6]
    return {
        "key": "size",
        "title": "7. Size: glmdata/ after ruff format",
        "stamp": stamp(),
        "checks": [],
        "ratios": [
            {
                "label": "lines of glmdata/**/*.py after `ruff format --line-length 120`",
                "measure": "source",
                "value": f"{lines:,} lines in {files} files",
                "target": f"<= {LINE_LIMIT:,}",
                "passed": lines <= LINE_LIMIT,
            }
        ],
        "notes": ["largest: " + ", ".join(f"{name} {n:,}" for name, n in largest)],
    }


# --- 8. render ----------------------------------------------------------------------------------


def render(ctx: Context) -> dict[str, Any]:
    msgs = str(ctx.messages)
    ours_runs: list[dict] = []
    theirs_runs: list[dict] = []
    timers = {
        "apply_chat_template": _task_timer(theirs_runs, "render-theirs", msgs),
        "glmdata.render": _task_timer(ours_runs, "render-ours", msgs),
    }
    ctx.log("  warm-up (one pass each, untimed)")
    for timer in timers.values():
        timer()
    s = interleaved(timers, ctx.repeats, log=ctx.log)
    n = ours_runs[0]["rows"]
    theirs = _samples(
        "transformers `apply_chat_template(tokenize=False)`", "in process", n, s["apply_chat_template"].seconds
    )
    ours = _samples("`glmdata.render.render`", "in process", n, s["glmdata.render"].seconds)
    digests = {r["digest"] for r in ours_runs + theirs_runs}
    return {
        "key": "render",
        "title": "8. Render against apply_chat_template",
        "stamp": ctx.stamp(input="converted messages JSONL"),
        "contenders": [theirs, ours],
        "checks": [{"ok": len(digests) == 1, "label": f"the same text on all {n:,} rows, every pass"}],
        "ratios": [speedup("speed-up of glmdata.render over apply_chat_template", "in process", theirs, ours)],
    }


# --- 9. train -----------------------------------------------------------------------------------

TRAIN_ROWS = 400  # the converted workload's first rows (replica 0: the original Glaive rows)
# The tutorial's configuration (max_seq_length 512, gradient accumulation 2, LoRA on q/k/v) at batch 4,
# on the tiny model with GLM-4's own tokenizer (the same ids: it has GLM-4's vocabulary and special ids).
# The timing callback times steps 2 to 3 (step 1 pays for warm-up): 3 steps, each logged for its tokens.
TRAIN_ARGS = (
    "--model", "tiny-random", "--max-length", "512", "--batch-size", "4", "--max-steps", "3",
    "--logging-steps", "1", "--seed", "0", "--eval-split", "0", "--save-steps", "1000",
    "--tracker", "none", "--json", "--set", "sft.disable_tqdm=true",
)  # fmt: skip
TRAIN_CONTENDERS = {
    "tutorial": ("TRL's default batching: each row padded to its batch's longest (`--no-padding-free`)", "padded"),
    "glmtrain": ("glmtrain's default (auto: padding-free on the GLM model)", "padding-free"),
}


def train_pass(ctx: Context, rows: Path, name: str, env: dict[str, str]) -> dict[str, Any]:
    """One `glmtrain run` of a contender; what it trained, read from its outputs: the seconds of the
    timed steps (summary ``seconds_per_step`` x the steps of plan.json's ``timing``) and the tokens
    the model saw in those steps (trainer_state.json's ``num_tokens``, logged at every step)."""
    out = ctx.work / f"train-{name}"
    shutil.rmtree(out, ignore_errors=True)
    extra = ["--no-padding-free"] if name == "tutorial" else []
    argv = [PYTHON, "-m", "glmtrain", "run", str(rows), "--tokenizer", str(ctx.tokenizer_dir), "-o", str(out)]
    run = run_command([*argv, *TRAIN_ARGS, *extra], env=env)
    summary = json.loads(run.stdout)
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    tokens = {h["step"]: int(h["num_tokens"]) for h in state["log_history"] if "num_tokens" in h}
    first, last = plan["timing"]["timed_steps"]
    seconds = summary["seconds_per_step"] * (last - first + 1)
    timed = tokens[last] - tokens[first - 1]
    losses = [round(h["loss"], 3) for h in state["log_history"] if "loss" in h]
    return {
        "seconds": seconds,
        "tokens": timed,
        "tokens_per_second": timed / seconds,
        "tokens_by_step": [tokens[k] for k in sorted(tokens)],
        "losses": losses,
        "batching": plan["batching"]["mode"],
        "reason": plan["batching"]["reason"],
        "wall": run.wall,
    }


def train(ctx: Context) -> dict[str, Any]:
    import os

    rows = ctx.work / "train-rows.jsonl"
    with open(ctx.messages, "rb") as f, open(rows, "wb") as out:
        for _, line in zip(range(TRAIN_ROWS), f):
            out.write(line)
    # the tiny model is built once, in the work directory, not in the user's cache
    env = {**os.environ, "GLMTRAIN_CACHE": str(ctx.work / "glmtrain-cache"), "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {name: [] for name in TRAIN_CONTENDERS}

    def timer(name: str) -> Callable[[], float]:
        def timed() -> float:
            result = train_pass(ctx, rows, name, env)
            runs[name].append(result)
            return result["seconds"]

        return timed

    timers = {name: timer(name) for name in TRAIN_CONTENDERS}
    ctx.log("  warm-up: builds the tiny model (one glmtrain pass, untimed)")
    train_pass(ctx, rows, "glmtrain", env)
    s = interleaved(timers, min(ctx.repeats, 3), log=ctx.log)
    contenders = [
        _samples(label, "timed training steps (2 to 3)", None, s[name].seconds)
        for name, (label, _) in TRAIN_CONTENDERS.items()
    ]
    theirs, ours = contenders
    rates = {name: [r["tokens_per_second"] for r in done] for name, done in runs.items()}
    tokens = {r["tokens"] for done in runs.values() for r in done}
    by_step = {tuple(r["tokens_by_step"]) for done in runs.values() for r in done}
    losses = {name: {tuple(r["losses"]) for r in done} for name, done in runs.items()}
    ratio = speedup(
        "trained tokens per second, glmtrain's default batching (padding-free) over the tutorial's (padded)",
        "timed training steps",
        theirs,
        ours,
    )
    first_loss = {name: runs[name][0]["losses"] for name in runs}
    return {
        "key": "train",
        "title": "9. Training throughput: padding-free against padded batches",
        "stamp": ctx.stamp(
            trained=f"the workload's first {TRAIN_ROWS} rows",
            model="tiny-random on CPU",
            tokenizer=ctx.tokenizer_dir.name,
            settings="max_length 512, batch 4 x 2 accumulation, 3 steps, seed 0",
        ),
        "contenders": contenders,
        "checks": [
            {
                "ok": all(r["batching"] == TRAIN_CONTENDERS[name][1] for name, done in runs.items() for r in done),
                "label": "each contender trained with the batching it stands for (plan.json)",
                "detail": runs["glmtrain"][0]["reason"],
            },
            {
                "ok": len(by_step) == 1 and len(tokens) == 1,
                "label": "both trained the same rows: the same tokens at every step, every pass",
                "detail": f"{next(iter(tokens)):,} tokens in the timed steps; by step {list(next(iter(by_step)))}"
                if len(by_step) == 1
                else f"tokens by step: {sorted(by_step)}",
            },
            {
                "ok": all(
                    abs(a - b) <= 1e-3 * abs(b)
                    for a, b in zip(first_loss["glmtrain"], first_loss["tutorial"], strict=True)
                ),
                "label": "the same loss at every step both ways (within 0.1%)",
                "detail": f"padded {first_loss['tutorial']}, padding-free {first_loss['glmtrain']}",
            },
        ],
        "ratios": [ratio],
        "notes": [
            "trained tokens per second (tokens the model saw in steps 2 to 3 over those steps' seconds): "
            + "; ".join(f"{name} min {min(v):,.0f}, median {statistics.median(v):,.0f}" for name, v in rates.items()),
            f"losses by pass: {losses}",
        ],
    }


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "tokenize": tokenize,
    "pipeline": pipeline,
    "floor": floor,
    "memory": memory,
    "workers": workers,
    "startup": startup,
    "size": size,
    "render": render,
    "train": train,
}
NEEDS_WORKLOAD = {"tokenize", "pipeline", "floor", "memory", "workers", "render", "train"}
NEEDS_TOKENIZER = {"tokenize", "pipeline", "train"}
UNTIMED = {"size"}  # counts lines: how busy the machine was does not matter


# Above this share of the machine used by other processes during a section, its notes say so.
BUSY = 0.10


def run_section(name: str, ctx: Context) -> dict[str, Any]:
    """Run a section; its stamp says on which glmdata commit, and how busy the machine was with
    other work meanwhile."""
    commit = revision()
    load = OtherLoad()
    try:
        section = SECTIONS[name](ctx)
    except CommandFailed as exc:
        section = {
            "key": name,
            "title": name,
            "stamp": stamp(),
            "notes": [f"failed: {exc}"],
            "ratios": [{"label": "run failed", "measure": "-", "value": "error", "target": "-", "passed": False}],
        }
    section["stamp"]["glmdata"] = commit
    share = load.share()
    if share is not None and name not in UNTIMED:
        section["stamp"]["other load"] = f"{share:.0%}"
        if share > BUSY:
            section.setdefault("notes", []).append(
                f"other processes used {share:.0%} of the machine's CPU time during this section: "
                "its ratios are less trustworthy than on an idle machine"
            )
    return section
