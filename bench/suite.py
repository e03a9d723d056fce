"""The sections of ``python -m bench``: one function per target of issue 7.

Each section returns a dict (see ``bench.report``): its contenders' samples, the checks that the
outputs agree, the ratios against their targets, and notes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.measure import PYTHON, CommandFailed, Samples, glmdata_command, interleaved, run_command, run_task
from bench.report import stamp

TOKENIZER_DIR = wl.REPO.parent / "shared" / "tokenizer" / "glm-4-9b-chat"
MB = 1_000_000
MEMORY_LIMIT = 300 * MB
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
    work: Path  #: temporary directory of this run
    data: wl.Workload
    messages: Path  #: the workload converted by `glmdata convert` (GLM-4 messages JSONL)
    repeats: int
    quick: bool
    memory_rows: list[int]
    startup_runs: int
    log: Callable[[str], None]
    workers_rows: int = 0  #: a second, larger size for the workers section (0: none)

    def stamp(self, **extra: Any) -> dict[str, Any]:
        return stamp(rows=f"{self.data.rows:,}", passes=self.repeats, **({"mode": "quick"} if self.quick else {}), **extra)


def prepare(work: Path, rows: int, *, repeat_tools: bool, log: Callable[[str], None]) -> tuple[wl.Workload, Path]:
    log(f"building the workload: {rows:,} rows in {work}")
    data = wl.build(rows, work, repeat_tools=repeat_tools)
    messages = work / "messages.jsonl"
    run_command([*glmdata_command(), "convert", str(data.jsonl), "-o", str(messages), "-q"], ok_codes=(0, 1))
    return data, messages


def _samples(name: str, measure: str, rows: int, seconds: list[float], **extra: Any) -> dict[str, Any]:
    s = Samples(name, seconds)
    return {"name": name, "measure": measure, "rows": rows, "seconds": seconds, "min": s.min, "median": s.median, **extra}


def _ratio(label: str, measure: str, num: dict, den: dict, target: float, *, at_least: bool) -> dict[str, Any]:
    """``num / den`` on medians and on minimums; ``at_least``: target is a minimum (speed-up),
    else a maximum (cost)."""
    median = num["median"] / den["median"]
    minimum = num["min"] / den["min"]
    passed = median >= target if at_least else median <= target
    sign = ">=" if at_least else "<="
    return {
        "label": label,
        "measure": measure,
        "value": f"{median:.2f}x ({minimum:.2f}x)",
        "median": median,
        "min": minimum,
        "target": f"{sign} {target:g}x",
        "passed": passed,
    }


def _task_timer(results: list[dict], name: str, *args: Any, **options: Any) -> Callable[[], float]:
    def timed() -> float:
        result = run_task(name, *args, **options)
        results.append(result)
        return result["seconds"]

    return timed


def _command_timer(argv: list[str], *, stdout_path: Path | None = None, ok_codes=(0, 1)) -> Callable[[], float]:
    def timed() -> float:
        return run_command(argv, stdout_path=stdout_path, ok_codes=ok_codes).wall

    return timed


# --- 1. baseline ------------------------------------------------------------------------------


def baseline(ctx: Context) -> dict[str, Any]:
    n = ctx.data.rows
    src = str(ctx.data.json_array)
    theirs_runs: list[dict] = []
    ours_runs: list[dict] = []
    ctx.log("  warm-up (one pass each, untimed)")
    theirs_runs.append(run_task("baseline", src))
    ours_runs.append(run_task("pipeline", src))
    contenders = {
        "tutorial pipeline": _task_timer(theirs_runs, "baseline", src),
        "glmdata convert + render": _task_timer(ours_runs, "pipeline", src),
        "tutorial command": _command_timer([PYTHON, "-m", "bench.tutorial", src, str(ctx.work / "tutorial.jsonl")]),
        "glmdata render --all command": _command_timer(
            [*glmdata_command(), "render", src, "--all"], stdout_path=ctx.work / "rendered.jsonl"
        ),
    }
    s = interleaved(contenders, ctx.repeats, log=ctx.log)
    theirs = _samples("tutorial: json.load + formatting_func + apply_chat_template", "in process", n, s["tutorial pipeline"].seconds)
    ours = _samples("glmdata: convert_file (repairs, all checks) + render", "in process", n, s["glmdata convert + render"].seconds)
    theirs_cmd = _samples("`python -m bench.tutorial IN.json OUT` (the same, as a script)", "whole command", n, s["tutorial command"].seconds)
    ours_cmd = _samples("`glmdata render IN.json --all > OUT`", "whole command", n, s["glmdata render --all command"].seconds)
    kept = ours_runs[0]["outputs"]
    return {
        "key": "baseline",
        "title": "1. Baseline: the tutorial's pipeline vs glmdata convert + render",
        "stamp": ctx.stamp(input="JSON array"),
        "description": (
            "Both read the Glaive JSON array and produce one training text per row. The tutorial "
            "(bench/tutorial.py, reproduced from FIELD_NOTES §4) validates nothing and renders the "
            "defects (`<|users|>`, empty tools headers); glmdata repairs, checks every row, drops "
            "rejected rows and renders the official template byte-identically."
        ),
        "contenders": [theirs, ours, theirs_cmd, ours_cmd],
        "checks": [
            {"ok": theirs_runs[0]["rows"] == n and ours_runs[0]["rows"] == n, "label": f"both read all {n:,} rows",
             "detail": f"tutorial rendered {theirs_runs[0]['outputs']:,}, glmdata kept and rendered {kept:,} (the rest rejected)"},
        ],
        "ratios": [
            _ratio("speed-up of glmdata over the tutorial", "in process", theirs, ours, 2.5, at_least=True),
            _ratio("speed-up of glmdata over the tutorial", "whole command", theirs_cmd, ours_cmd, 2.5, at_least=True),
        ],
    }


# --- 2. floor ---------------------------------------------------------------------------------


def floor(ctx: Context) -> dict[str, Any]:
    n = ctx.data.rows
    src = str(ctx.data.jsonl)
    floor_runs: list[dict] = []
    convert_runs: list[dict] = []
    ctx.log("  warm-up (one pass each, untimed)")
    floor_runs.append(run_task("floor", src, ctx.work / "floor.jsonl"))
    convert_runs.append(run_task("convert", src, ctx.work / "convert.jsonl"))
    contenders = {
        "floor": _task_timer(floor_runs, "floor", src, ctx.work / "floor.jsonl"),
        "convert": _task_timer(convert_runs, "convert", src, ctx.work / "convert.jsonl"),
        "floor command": _command_timer([PYTHON, "-c", FLOOR_SCRIPT, src, str(ctx.work / "floor-cmd.jsonl")], ok_codes=(0,)),
        "convert command": _command_timer([*glmdata_command(), "convert", src, "-o", str(ctx.work / "convert-cmd.jsonl"), "-q"]),
    }
    s = interleaved(contenders, ctx.repeats, log=ctx.log)
    fl = _samples("floor: orjson.loads + orjson.dumps per line, written", "in process", n, s["floor"].seconds)
    cv = _samples("glmdata convert_file, rows (their bytes) and rejects written", "in process", n, s["convert"].seconds)
    fl_cmd = _samples("`python -c '<orjson loop>' IN OUT`", "whole command", n, s["floor command"].seconds)
    cv_cmd = _samples("`glmdata convert IN.jsonl -o OUT -q`", "whole command", n, s["convert command"].seconds)
    same = (ctx.work / "convert.jsonl").read_bytes() == (ctx.work / "convert-cmd.jsonl").read_bytes()
    return {
        "key": "floor",
        "title": "2. Floor: glmdata convert vs the fastest JSON parse + serialize",
        "stamp": ctx.stamp(input="JSONL"),
        "description": "The floor does no work but parsing and writing each row; convert also repairs, checks and detects duplicates.",
        "contenders": [fl, cv, fl_cmd, cv_cmd],
        "checks": [
            {"ok": same, "label": "in-process convert writes the same bytes as the `glmdata convert` command"},
            {"ok": floor_runs[0]["rows"] == convert_runs[0]["rows"] == n, "label": f"both read all {n:,} rows",
             "detail": f"convert kept {convert_runs[0]['outputs']:,}"},
        ],
        "ratios": [
            _ratio("cost of convert relative to the floor", "in process", cv, fl, 3, at_least=False),
            _ratio("cost of convert relative to the floor", "whole command", cv_cmd, fl_cmd, 3, at_least=False),
        ],
    }


# --- 3. render --------------------------------------------------------------------------------


def render(ctx: Context) -> dict[str, Any]:
    msgs = str(ctx.messages)
    ours_runs: list[dict] = []
    theirs_runs: list[dict] = []
    ctx.log("  warm-up (one pass each, untimed)")
    ours_runs.append(run_task("render-ours", msgs))
    theirs_runs.append(run_task("render-theirs", msgs))
    n = ours_runs[0]["rows"]
    contenders = {
        "apply_chat_template": _task_timer(theirs_runs, "render-theirs", msgs),
        "glmdata.render": _task_timer(ours_runs, "render-ours", msgs),
    }
    s = interleaved(contenders, ctx.repeats, log=ctx.log)
    theirs = _samples("transformers apply_chat_template(tokenize=False), official template", "in process", n, s["apply_chat_template"].seconds)
    ours = _samples("glmdata.render", "in process", n, s["glmdata.render"].seconds)
    digests = {r["digest"] for r in ours_runs + theirs_runs}
    return {
        "key": "render",
        "title": "3. Render: glmdata.render vs apply_chat_template on converted rows",
        "stamp": ctx.stamp(input="converted messages JSONL"),
        "description": (
            "Rows converted once by `glmdata convert` (not timed), rendered without generation prompt. "
            "Every pass is a fresh process: glmdata's tool-block cache starts empty (the former "
            "'cold tools cache' contender), and transformers compiles its template once per pass."
        ),
        "contenders": [theirs, ours],
        "checks": [{"ok": len(digests) == 1, "label": f"outputs identical on all {n:,} rows in every pass", "detail": f"sha256 {next(iter(digests))[:16]}…" if len(digests) == 1 else "digests differ"}],
        "ratios": [_ratio("speed-up of glmdata.render over apply_chat_template", "in process", theirs, ours, 3, at_least=True)],
    }


# --- 4. tokenize + masks ----------------------------------------------------------------------


def tokenize(ctx: Context) -> dict[str, Any]:
    msgs = str(ctx.messages)
    tok = str(TOKENIZER_DIR)
    ours_runs: list[dict] = []
    theirs_runs: list[dict] = []
    ctx.log("  warm-up and verification (one pass each, untimed)")
    ours_dump, theirs_dump = ctx.work / "tokens-ours.jsonl", ctx.work / "tokens-theirs.jsonl"
    ours_runs.append(run_task("tokenize-ours", msgs, tok, dump=ours_dump))
    theirs_runs.append(run_task("tokenize-theirs", msgs, tok, dump=theirs_dump))
    n = ours_runs[0]["rows"]
    via_runs: list[dict] = [run_task("tokenize-ours", msgs, tok, via_tokenizer=True)]
    contenders = {
        "apply_chat_template": _task_timer(theirs_runs, "tokenize-theirs", msgs, tok),
        "glmdata.masks": _task_timer(ours_runs, "tokenize-ours", msgs, tok),
        "glmdata.masks via tokenizer": _task_timer(via_runs, "tokenize-ours", msgs, tok, via_tokenizer=True),
    }
    s = interleaved(contenders, ctx.repeats, log=ctx.log)
    theirs = _samples(
        "apply_chat_template(tokenize=True, return_assistant_tokens_mask=True, return_dict=True), generation template, batches of 1,000",
        "in process", n, s["apply_chat_template"].seconds,
    )
    ours = _samples("glmdata.masks.tokenize_batch, batches of 1,000 (encodes with tiktoken)", "in process", n, s["glmdata.masks"].seconds)
    via = _samples(
        "the same, encoding through the transformers tokenizer (glmdata's path for other tokenizers; before the tiktoken path, all tokenizers)",
        "in process", n, s["glmdata.masks via tokenizer"].seconds,
    )
    ids_same = len({r["digest"] for r in ours_runs + theirs_runs + via_runs}) == 1
    masks = compare_masks(ours_dump, theirs_dump, msgs, tok)
    tokens = ours_runs[0]["tokens"]
    return {
        "key": "tokenize",
        "title": "4. Tokenize + masks with the real GLM-4 vocabulary",
        "stamp": ctx.stamp(input="converted messages JSONL", tokens=f"{tokens:,}"),
        "description": (
            "glm-4-9b-chat's own vocabulary (tokenizer.model, 151,329 ranks + 14 special tokens) loaded by "
            "`glmdata.tokenizer.load_tokenizer` (not timed). glmdata's text ends with the `<|user|>` the official "
            "demo appends; ids are compared without it."
        ),
        "contenders": [theirs, ours, via],
        "checks": [
            {"ok": ids_same, "label": f"same token ids on all {n:,} rows in every pass, all three contenders"},
            {"ok": masks["ok"], "label": "same assistant masks", "detail": masks["detail"]},
        ],
        "ratios": [
            _ratio("speed-up of glmdata.masks over apply_chat_template", "in process", theirs, ours, 2, at_least=True),
            {**_ratio("speed-up of glmdata.masks via the transformers tokenizer", "in process", theirs, via, 2, at_least=True), "target": "(other tokenizers; no target)", "passed": None},
        ],
    }


def compare_masks(ours_path: Path, theirs_path: Path, messages_path: str, tokenizer_dir: str) -> dict[str, Any]:
    """Masks must agree, except where transformers maps a generation block's last character to
    the first of several byte tokens that spell it (its ``char_to_token``), and so leaves the later
    ones out: tests/test_masks.py allows exactly that difference."""
    import orjson

    differing = []
    with open(ours_path, "rb") as a, open(theirs_path, "rb") as b:
        for index, (x, y) in enumerate(zip(a, b)):
            if x != y:
                (ids_a, m_a), (ids_b, m_b) = orjson.loads(x), orjson.loads(y)
                if ids_a != ids_b:
                    return {"ok": False, "detail": f"row {index}: ids differ"}
                differing.append((index, m_a, m_b))
    if not differing:
        return {"ok": True, "detail": "identical on every row"}
    from glmdata.render import render_spans
    from glmdata.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    rows = [orjson.loads(line)["messages"] for line in open(messages_path, "rb")]
    tokens = 0
    for index, mine, hf in differing:
        text = render_spans(rows[index]).text
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for i, (p, q) in enumerate(zip(mine, hf)):
            if p != q:
                if not (p == 1 and q == 0 and i > 0 and offsets[i] == offsets[i - 1]):
                    return {"ok": False, "detail": f"row {index} token {i}: ours {p}, transformers {q}"}
                tokens += 1
    return {
        "ok": True,
        "detail": f"identical on all but {len(differing):,} rows; there, {tokens:,} tokens are 1 in ours and 0 in transformers', "
        "each a later byte token of a character split over several tokens (transformers' char_to_token drops them)",
    }


# --- 5. memory --------------------------------------------------------------------------------


def memory(ctx: Context) -> dict[str, Any]:
    sizes = ctx.memory_rows
    mem_dir = ctx.work / "memory"
    mem_dir.mkdir(exist_ok=True)
    per_row = wl.average_row_bytes(ctx.data.jsonl)
    contenders = []
    notes = []
    for size in sizes:
        # JSONL + indented JSON array (~1.2x) + the converted output (~1x) + 1 GB to spare.
        needed = int(size * per_row * 3.4) + 1_000_000_000
        free = shutil.disk_usage(mem_dir).free
        if needed > free:
            notes.append(f"{size:,} rows skipped: needs about {needed / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free")
            ctx.log(f"  {notes[-1]}")
            continue
        ctx.log(f"  generating {size:,} rows (JSONL and JSON array)")
        jsonl, array = wl.write_files(size, mem_dir)
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
                contenders.append({"name": f"`{name}`", "input": kind, "rows": size, "max_rss": run.max_rss, "wall": run.wall})
                ctx.log(f"    {name} {kind} {size:,} rows: peak RSS {run.max_rss / MB:,.0f} MB, {run.wall:.1f} s")
        finally:
            for path in (jsonl, array, out, mem_dir / "out.rejects.jsonl", mem_dir / "stats.json"):
                path.unlink(missing_ok=True)
    peak = max((c["max_rss"] for c in contenders), default=None)
    ratios = []
    for (name, kind) in dict.fromkeys((c["name"], c["input"]) for c in contenders):
        runs = [c for c in contenders if (c["name"], c["input"]) == (name, kind)]
        worst = max(c["max_rss"] for c in runs)
        growth = runs[-1]["max_rss"] - runs[0]["max_rss"]
        ratios.append({
            "label": f"peak RSS of {name} on {kind}, {runs[0]['rows']:,} to {runs[-1]['rows']:,} rows",
            "measure": "child process",
            "value": f"max {worst / MB:,.0f} MB (grows {growth / MB:+,.0f} MB)",
            "target": "< 300 MB",
            "passed": worst < MEMORY_LIMIT,
        })
    return {
        "key": "memory",
        "kind": "memory",
        "title": "5. Memory: peak RSS of convert and stats as the input grows",
        "stamp": stamp(sizes=", ".join(f"{s:,}" for s in sizes), **({"mode": "quick"} if ctx.quick else {})),
        "description": (
            "Peak resident set size of the command's own process (getrusage via os.wait4, started from a small launcher: a child's peak would otherwise start at the size of the process that forked it), one run per size. "
            "Inputs are the replicated workload at each size, written once and deleted after."
        ),
        "contenders": contenders,
        "ratios": ratios,
        "notes": notes + ([f"highest peak: {peak / MB:,.0f} MB"] if peak else []),
    }


# --- 6. workers -------------------------------------------------------------------------------


def workers_available() -> bool:
    help_text = subprocess.run([*glmdata_command(), "convert", "--help"], capture_output=True, text=True).stdout
    return "--workers" in help_text


def workers(ctx: Context) -> dict[str, Any]:
    section: dict[str, Any] = {
        "key": "workers",
        "title": "6. Scale-out: --workers 2 vs 1",
        "stamp": ctx.stamp(input="JSONL"),
    }
    if not workers_available():
        section["ratios"] = [{"label": "speed-up of --workers 2 over 1", "measure": "whole command", "value": "not available", "target": ">= 1.6x", "passed": None}]
        section["notes"] = ["`glmdata convert` has no `--workers` option yet: nothing measured."]
        return section
    n = ctx.data.rows
    src = str(ctx.data.jsonl)
    out = {w: ctx.work / f"workers{w}.jsonl" for w in (1, 2)}
    reports = {w: ctx.work / f"validate{w}.json" for w in (1, 2)}
    contenders = {}
    for w in (1, 2):
        contenders[f"convert --workers {w}"] = _command_timer([*glmdata_command(), "convert", src, "-o", str(out[w]), "-q", "--workers", str(w)])
        contenders[f"validate --workers {w}"] = _command_timer([*glmdata_command(), "validate", src, "--json", "-q", "--workers", str(w)], stdout_path=reports[w])
    in_process = _convert_file_accepts_workers()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    chunk_runs: dict[int, list[dict]] = {1: [], 2: []}
    if in_process:
        for w in (1, 2):
            contenders[f"convert_file(workers={w})"] = _task_timer(runs[w], "convert", src, ctx.work / f"inproc{w}.jsonl", workers=w)
        # the command's own conversion, without its start-up; and the start-up, on 10 rows
        for w in (1, 2):
            contenders[f"convert_chunks(workers={w})"] = _task_timer(chunk_runs[w], "chunks", src, ctx.work / f"chunks{w}.jsonl", workers=w)
        contenders["convert (10 rows)"] = _command_timer([*glmdata_command(), "convert", str(ctx.data.small_jsonl), "-o", str(ctx.work / "startup.jsonl"), "-q"])
    ctx.log("  warm-up (one pass each, untimed)")
    for timer in contenders.values():
        timer()
    s = interleaved(contenders, ctx.repeats, log=ctx.log)
    samples = {name: _samples(*_workers_label(name), 10 if name == "convert (10 rows)" else n, v.seconds) for name, v in s.items()}

    def same(a: Path, b: Path) -> bool:
        return a.read_bytes() == b.read_bytes()

    rejects = {w: out[w].with_name(out[w].name.removesuffix(".jsonl") + ".rejects.jsonl") for w in (1, 2)}
    checks = [
        {"ok": same(out[1], out[2]), "label": "convert: output identical with 1 and 2 workers"},
        {"ok": same(rejects[1], rejects[2]) if rejects[1].exists() and rejects[2].exists() else rejects[1].exists() == rejects[2].exists(), "label": "convert: rejects file identical with 1 and 2 workers"},
        {"ok": same(reports[1], reports[2]), "label": "validate --json: report identical with 1 and 2 workers"},
    ]
    if in_process:
        checks.append({"ok": same(ctx.work / "inproc1.jsonl", ctx.work / "inproc2.jsonl") and same(ctx.work / "inproc1.jsonl", out[1]),
                       "label": "convert_file(workers=2): same rows, same order as 1 worker and as the command"})
        counts = {result["rows"] for done in (*runs.values(), *chunk_runs.values()) for result in done}
        checks.append({"ok": counts == {n}, "label": f"convert_file and convert_chunks, 1 and 2 workers: every pass read all {n:,} rows",
                       "detail": f"rows read: {sorted(counts)}"})
    ratios = [
        _ratio("speed-up of `convert --workers 2` over 1", "whole command", samples["convert --workers 1"], samples["convert --workers 2"], 1.6, at_least=True),
        _ratio("speed-up of `validate --workers 2` over 1", "whole command", samples["validate --workers 1"], samples["validate --workers 2"], 1.6, at_least=True),
    ]
    notes = []
    if in_process:
        ratios.append(_ratio("speed-up of convert_file(workers=2) over 1", "in process", samples["convert_file(workers=1)"], samples["convert_file(workers=2)"], 1.6, at_least=True))
        checks.append({"ok": same(ctx.work / "chunks1.jsonl", out[1]) and same(ctx.work / "chunks2.jsonl", out[1]),
                       "label": "convert_chunks with 1 and 2 workers: the command's bytes"})
        ratios.append({**_ratio("speed-up of convert_chunks(workers=2) over 1: the command without its start-up", "in process",
                                samples["convert_chunks(workers=1)"], samples["convert_chunks(workers=2)"], 1.6, at_least=True),
                       "target": "(explains the command; no target)", "passed": None})
        ratio, note = _amdahl(samples["convert (10 rows)"], samples["convert_chunks(workers=1)"])
        ratios.append(ratio)
        notes.append(note)
    contenders_list = list(samples.values())
    if ctx.workers_rows > n:
        more, check, ratio = _workers_at(ctx, ctx.workers_rows)
        contenders_list += more
        checks.append(check)
        ratios.append(ratio)
    section.update(contenders=contenders_list, checks=checks, ratios=ratios, notes=notes)
    return section


def _workers_label(name: str) -> tuple[str, str]:
    """(contender name, measure) of a workers-section timer."""
    if "--" in name or name.startswith("convert ("):
        return f"`glmdata {name}`", "whole command"
    return name, "in process"


def _amdahl(startup: dict, conversion: dict) -> tuple[dict[str, Any], str]:
    """The most `convert --workers 2` can gain over 1 on this file: start-up (the command on 10
    rows) runs once whatever the workers, and at best two processes halve the conversion."""
    s, c = startup["median"], conversion["median"]
    best = (s + c) / (s + c / 2)
    ratio = {
        "label": "most `convert --workers 2` can gain over 1 here: (start-up + conversion) / (start-up + conversion / 2)",
        "measure": "whole command",
        "value": f"{best:.2f}x",
        "median": best,
        "min": best,
        "target": "(bound; no target)",
        "passed": None,
    }
    note = (f"Start-up (the command on 10 rows) {s:.3f} s runs once; the conversion (convert_chunks, one process) "
            f"{c:.3f} s is what two processes can split. Halved perfectly, the command would gain "
            f"({s:.3f} + {c:.3f}) / ({s:.3f} + {c / 2:.3f}) = {best:.2f}x.")
    return ratio, note


def _workers_at(ctx: Context, size: int) -> tuple[list[dict], dict, dict]:
    """`convert --workers 1` and `2` on a larger file of the same workload: start-up, which does
    not parallelise, weighs less there. Three passes (the file is large); the file is deleted after."""
    directory = ctx.work / f"workers-{size}"
    ctx.log(f"  generating {size:,} rows (JSONL)")
    jsonl, _ = wl.write_files(size, directory, json_array=False)
    try:
        out = {w: directory / f"out{w}.jsonl" for w in (1, 2)}
        timers = {w: _command_timer([*glmdata_command(), "convert", str(jsonl), "-o", str(out[w]), "-q", "--workers", str(w)]) for w in (1, 2)}
        s = interleaved({f"convert --workers {w} ({size:,} rows)": timers[w] for w in (1, 2)}, min(ctx.repeats, 3), log=ctx.log)
        samples = [_samples(f"`glmdata {name}`", "whole command", size, v.seconds) for name, v in s.items()]
        check = {"ok": out[1].read_bytes() == out[2].read_bytes(), "label": f"convert at {size:,} rows: output identical with 1 and 2 workers"}
        ratio = _ratio(f"speed-up of `convert --workers 2` over 1 at {size:,} rows", "whole command", samples[0], samples[1], 1.6, at_least=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return samples, check, ratio


def _convert_file_accepts_workers() -> bool:
    code = "import inspect, glmdata.convert as c; print('workers' in inspect.signature(c.convert_file).parameters)"
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


# --- 7. start-up ------------------------------------------------------------------------------


def startup(ctx: Context) -> dict[str, Any]:
    small = str(ctx.data.small_jsonl)
    glmdata = glmdata_command()
    commands = {
        "`python -c pass` (interpreter alone, for scale)": [PYTHON, "-c", "pass"],
        "`python -c 'import glmdata'`": [PYTHON, "-c", "import glmdata"],
        "`glmdata --help`": [*glmdata, "--help"],
        "`glmdata render small.jsonl --row 0`": [*glmdata, "render", small, "--row", "0"],
    }
    timers = {name: _command_timer(argv, ok_codes=(0,)) for name, argv in commands.items()}
    for timer in timers.values():  # warm-up: .pyc files, page cache
        timer()
    s = interleaved(timers, ctx.startup_runs, log=ctx.log)
    contenders = [_samples(name, "whole command", None, v.seconds) for name, v in s.items()]  # type: ignore[arg-type]
    checks = []
    for label, args in (("glmdata --help", ["--help"]), ("glmdata render small.jsonl --row 0", ["render", small, "--row", "0"])):
        result = subprocess.run([PYTHON, "-c", IMPORT_PROBE, *args], capture_output=True, text=True, cwd=wl.REPO)
        heavy = next((line[6:] for line in result.stderr.splitlines() if line.startswith("HEAVY=")), None)
        checks.append({"ok": heavy == "", "label": f"`{label}` imports none of torch, transformers, datasets",
                       "detail": "probe failed" if heavy is None else (f"imported {heavy[:200]}" if heavy else "")})
    help_median = s["`glmdata --help`"].median
    return {
        "key": "startup",
        "title": "7. Start-up: wall time of short commands",
        "stamp": stamp(runs=ctx.startup_runs, **({"mode": "quick"} if ctx.quick else {})),
        "description": "Whole-command wall time (spawn to exit), interleaved. small.jsonl holds the first 10 workload rows (Glaive, converted on the fly). tests/test_startup.py checks the imported modules.",
        "contenders": contenders,
        "checks": checks,
        "ratios": [{"label": "`glmdata --help` median wall time", "measure": "whole command", "value": f"{help_median * 1000:.0f} ms",
                    "target": "< 1 s (STYLE §7)", "passed": help_median < 1.0},
                   {"label": "`glmdata render --row 0` median wall time", "measure": "whole command",
                    "value": f"{s['`glmdata render small.jsonl --row 0`'].median * 1000:.0f} ms", "target": "report", "passed": None}],
    }


SECTIONS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "baseline": baseline,
    "floor": floor,
    "render": render,
    "tokenize": tokenize,
    "memory": memory,
    "workers": workers,
    "startup": startup,
}
NEEDS_TOKENIZER = {"tokenize"}


def run_section(name: str, ctx: Context) -> dict[str, Any]:
    try:
        return SECTIONS[name](ctx)
    except CommandFailed as exc:
        return {"key": name, "title": name, "stamp": stamp(), "notes": [f"failed: {exc}"],
                "ratios": [{"label": "run failed", "measure": "-", "value": "error", "target": "-", "passed": False}]}
