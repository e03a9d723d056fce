"""Statistics of a dataset as GLM-4 will be trained on it: lengths, truncation, tools, loss masks.

Streams the file (converting any supported format on the fly) and tokenizes in batches, so memory
grows only with one integer per row. Without a tokenizer, lengths are characters of the training
text, and the result says so.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from glmdata.checks import tool_call
from glmdata.convert import Options, convert_file
from glmdata.families import Reasoning
from glmdata.models import MessageDict, MessagesRow
from glmdata.render import NothingToTrain, TrainOn, render_spans
from glmdata.report import Report

BATCH = 256
LONGEST = 10
EXAMPLES = 20
_TAG_BEFORE = re.compile(r"<\|(\w+)\|>$")
# GLM-4.5's empty think block, which a trained span may start after (it is not trained).
_EMPTY_THINK = "\n<think></think>"


def percentile(sorted_values: Any, p: float) -> int:
    """Nearest-rank percentile of already sorted values (0 for no values)."""
    if not len(sorted_values):
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return int(sorted_values[rank - 1])


@dataclass
class Stats:
    """Everything ``glmdata stats`` reports. ``unit`` is ``tokens`` or ``characters``."""

    unit: str = "characters"
    max_length: int | None = None
    train_on: TrainOn = "assistant"
    report: Report = field(default_factory=Report)
    messages_per_role: Counter = field(default_factory=Counter)
    user_turns: array = field(default_factory=lambda: array("I"))
    messages_per_row: array = field(default_factory=lambda: array("I"))
    tools_declared: Counter = field(default_factory=Counter)
    tools_called: Counter = field(default_factory=Counter)
    rows_with_tools: int = 0
    rows_with_calls: int = 0
    lengths: array = field(default_factory=lambda: array("I"))
    trained_lengths: array = field(default_factory=lambda: array("I"))
    longest: list = field(default_factory=list)  # heap of (length, index)
    duplicates: int = 0
    trained_by_role: Counter = field(default_factory=Counter)
    trained_by_kind: Counter = field(default_factory=Counter)
    nothing_trained: list[int] = field(default_factory=list)
    rows_cut: int = 0
    cut_rows: list[int] = field(default_factory=list)
    trained_cut: int = 0
    cut_inside_trained_turn: int = 0
    cut_inside_rows: list[int] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.lengths) + len(self.nothing_trained)

    def summary(self, values: array) -> dict[str, int]:
        ordered = sorted(values)
        return {
            "min": int(ordered[0]) if ordered else 0,
            "p50": percentile(ordered, 50),
            "p90": percentile(ordered, 90),
            "p99": percentile(ordered, 99),
            "max": int(ordered[-1]) if ordered else 0,
            "mean": round(sum(ordered) / len(ordered), 1) if ordered else 0,
        }

    def to_dict(self) -> dict[str, Any]:
        total_trained = sum(self.trained_lengths)
        conversion = self.report.to_dict()
        return {
            "source": self.report.source,
            "unit": self.unit,
            "train_on": self.train_on,
            "rows_in": self.report.rows_in,
            "rows": self.rows,
            "rejected": self.report.rejected,
            "deduplicated": self.report.deduplicated,
            "duplicates": self.duplicates,
            "repairs": {k: v["rows"] for k, v in conversion["repairs"].items()},
            "messages_per_role": dict(self.messages_per_role),
            "user_turns_per_row": self.summary(self.user_turns),
            "messages_per_row": self.summary(self.messages_per_row),
            "rows_with_tools": self.rows_with_tools,
            "rows_without_tools": self.rows - self.rows_with_tools,
            "rows_with_calls": self.rows_with_calls,
            "tools_declared": dict(self.tools_declared.most_common()),
            "tools_called": dict(self.tools_called.most_common()),
            "length": self.summary(self.lengths),
            "trained_length": self.summary(self.trained_lengths),
            "trained_total": total_trained,
            "longest_rows": [{"row": i, "length": n} for n, i in sorted(self.longest, reverse=True)],
            "loss_audit": {
                "trained_by_role": dict(self.trained_by_role),
                "trained_by_turn_kind": dict(self.trained_by_kind),
                "tool_call_turns": self.trained_by_kind.get("tool-call turns", 0),
                "rows_with_nothing_trained": len(self.nothing_trained),
                "nothing_trained_rows": self.nothing_trained[:EXAMPLES],
            },
            "truncation": None
            if self.max_length is None
            else {
                "max_length": self.max_length,
                "rows_cut": self.rows_cut,
                "rows_cut_share": round(self.rows_cut / self.rows, 4) if self.rows else 0.0,
                "trained_cut": self.trained_cut,
                "trained_cut_share": round(self.trained_cut / total_trained, 4) if total_trained else 0.0,
                "cut_inside_trained_turn": self.cut_inside_trained_turn,
                "cut_inside_trained_turn_rows": self.cut_inside_rows[:EXAMPLES],
                "cut_rows": self.cut_rows[:EXAMPLES],
            },
        }


def compute(
    path: str,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    train_on: TrainOn = "assistant",
    options: Options = Options(),
    template: Any = None,
    reasoning: Reasoning = "text",
) -> Stats:
    """Stream ``path`` and compute :class:`Stats`; ``tokenizer`` None means characters; ``template``
    and ``reasoning`` as for ``glmdata.render.render_spans``."""
    stats = Stats(
        unit="tokens" if tokenizer is not None else "characters",
        max_length=max_length,
        train_on=train_on,
        report=Report(path),
    )
    batch: list[tuple[int, MessagesRow]] = []
    for result in convert_file(path, options):
        stats.report.add(result)
        if not result.ok:
            continue
        if result.duplicate_of is not None:
            stats.duplicates += 1
        row = result.row
        assert row is not None  # read with decode (the default)
        _count_messages(stats, row["messages"])
        batch.append((result.index, row))
        if len(batch) >= BATCH:
            _measure(stats, batch, tokenizer, train_on, template, reasoning)
            batch = []
    if batch:
        _measure(stats, batch, tokenizer, train_on, template, reasoning)
    return stats


def _count_messages(stats: Stats, messages: list[MessageDict]) -> None:
    stats.messages_per_row.append(len(messages))
    stats.user_turns.append(sum(m["role"] == "user" for m in messages))
    declared = False
    called = False
    for message in messages:
        stats.messages_per_role[message["role"]] += 1
        for tool in message.get("tools") or ():
            declared = True
            function = tool.get("function")
            stats.tools_declared[function["name"] if function is not None else tool["type"]] += 1
        call = tool_call(message)
        if call is not None:
            called = True
            stats.tools_called[call[0]] += 1
    stats.rows_with_tools += declared
    stats.rows_with_calls += called


def _span_kind(text: str, start: int) -> tuple[str, str]:
    """(role, turn kind) of the trained span starting at ``start``, read off the tag before it."""
    tag_end = start - len(_EMPTY_THINK) if text.endswith(_EMPTY_THINK, 0, start) else start
    tag = _TAG_BEFORE.search(text, max(0, tag_end - 20), tag_end)
    role = tag.group(1) if tag else "all"
    if role != "assistant":
        return role, f"{role} turns"
    if text.startswith("\n<think>", start) or tag_end != start:  # GLM-4.5: calls inside the turn
        end = text.find("<|", start)
        return role, "tool-call turns" if "\n<tool_call>" in text[start : end if end >= 0 else None] else (
            "assistant text turns"
        )
    line_end = text.find("\n", start)
    if line_end != start:  # a metadata line: native tool call
        return role, "tool-call turns"
    if text.startswith('{"name"', start + 1):
        return role, "tool-call turns"
    return role, "assistant text turns"


def _measure(
    stats: Stats,
    batch: Iterable[tuple[int, MessagesRow]],
    tokenizer: Any,
    train_on: TrainOn,
    template: Any,
    reasoning: Reasoning,
) -> None:
    rendered = []
    for index, row in batch:
        try:
            rendered.append(
                (index, render_spans(row["messages"], train_on=train_on, template=template, reasoning=reasoning))
            )
        except NothingToTrain:
            stats.nothing_trained.append(index)
    if not rendered:
        return
    if tokenizer is not None:
        from glmdata.masks import token_spans

        per_row = token_spans([r for _, r in rendered], tokenizer)
    else:  # characters: position i belongs to span j or -1
        per_row = [_char_spans(r) for _, r in rendered]
    for (index, r), turn in zip(rendered, per_row):
        n = len(turn)
        trained = sum(t >= 0 for t in turn)
        stats.lengths.append(n)
        stats.trained_lengths.append(trained)
        if len(stats.longest) < LONGEST:
            heapq.heappush(stats.longest, (n, index))
        else:
            heapq.heappushpop(stats.longest, (n, index))
        per_span = Counter(t for t in turn if t >= 0)
        for j, (start, _) in enumerate(r.spans):
            role, kind = _span_kind(r.text, start)
            stats.trained_by_role[role] += per_span[j]
            stats.trained_by_kind[kind] += per_span[j]
        m = stats.max_length
        if m is not None and n > m:
            stats.rows_cut += 1
            if len(stats.cut_rows) < EXAMPLES:
                stats.cut_rows.append(index)
            stats.trained_cut += sum(t >= 0 for t in turn[m:])
            if m > 0 and turn[m - 1] >= 0 and turn[m - 1] == turn[m]:
                stats.cut_inside_trained_turn += 1
                if len(stats.cut_inside_rows) < EXAMPLES:
                    stats.cut_inside_rows.append(index)


def _char_spans(rendered: Any) -> list[int]:
    turn = [-1] * len(rendered.text)
    for j, (start, end) in enumerate(rendered.spans):
        turn[start:end] = [j] * (end - start)
    return turn


# ---------------------------------------------------------------------------------------- display


def histogram(values: array, bins: int = 20, limit: int | None = None) -> list[tuple[int, int, int]]:
    """Equal-width bins ``(low, high, count)`` from 0 to the maximum (or past ``limit``)."""
    if not len(values):
        return []
    top = max(max(values), limit or 0) + 1
    width = max(1, math.ceil(top / bins))
    counts = [0] * math.ceil(top / width)
    for v in values:
        counts[v // width] += 1
    return [(i * width, (i + 1) * width, c) for i, c in enumerate(counts)]


def print_stats(stats: Stats, console: Any) -> None:
    """Tables and a histogram on a rich console."""
    from rich.markup import escape
    from rich.table import Table

    d = stats.to_dict()
    unit = stats.unit
    note = "" if unit == "tokens" else "  [yellow](no --tokenizer: lengths are characters, not tokens)[/]"
    console.print(
        f"[bold]{escape(str(d['source']))}[/]: {d['rows']:,} rows ({d['rejected']:,} rejected, {d['duplicates']:,} duplicates){note}"
    )
    t = Table(
        "",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "mean",
        title=f"lengths ({unit}, train-on {stats.train_on})",
        title_justify="left",
    )
    for label, key in (
        ("rendered row", "length"),
        ("trained part", "trained_length"),
        ("messages per row", "messages_per_row"),
        ("user turns per row", "user_turns_per_row"),
    ):
        s = d[key]
        t.add_row(label, *(f"{s[k]:,}" for k in ("min", "p50", "p90", "p99", "max")), f"{s['mean']:,}")
    console.print(t)
    roles = ", ".join(f"{k} {v:,}" for k, v in d["messages_per_role"].items())
    console.print(f"messages per role: {roles}")
    console.print(
        f"rows with tools: {d['rows_with_tools']:,}, without: {d['rows_without_tools']:,}, with tool calls: {d['rows_with_calls']:,}"
    )
    if d["tools_declared"] or d["tools_called"]:
        t = Table("tool", "rows declaring", "calls", title="tools (top 15)", title_justify="left")
        names = list(dict.fromkeys([*d["tools_called"], *d["tools_declared"]]))[:15]
        for name in names:
            t.add_row(
                escape(name), f"{d['tools_declared'].get(name, 0):,}", f"{d['tools_called'].get(name, 0):,}"
            )  # data, not markup
        console.print(t)
    audit = d["loss_audit"]
    t = Table("trained by", f"{unit}", "share", title="loss-mask audit", title_justify="left")
    total = d["trained_total"] or 1
    for kind, n in sorted(audit["trained_by_turn_kind"].items(), key=lambda kv: -kv[1]):
        t.add_row(kind, f"{n:,}", f"{n / total:.1%}")
    console.print(t)
    if audit["rows_with_nothing_trained"]:
        console.print(
            f"[red]{audit['rows_with_nothing_trained']:,} rows have nothing to train[/] (rows {audit['nothing_trained_rows']})"
        )
    longest = ", ".join(f"{r['row']} ({r['length']:,})" for r in d["longest_rows"][:5])
    console.print(f"longest rows: {longest}")
    cut = d["truncation"]
    if cut is not None:
        colour = "red" if cut["rows_cut"] else "green"
        console.print(
            f"[{colour}]--max-length {cut['max_length']:,}: cuts {cut['rows_cut']:,} rows ({cut['rows_cut_share']:.1%}) and "
            f"{cut['trained_cut']:,} trained {unit} ({cut['trained_cut_share']:.1%} of all trained); "
            f"{cut['cut_inside_trained_turn']:,} cuts fall inside a trained turn (that answer loses its stop tag)[/]"
        )
        if cut["cut_rows"]:
            console.print(f"  rows cut (first {EXAMPLES}): {cut['cut_rows']}")
    _print_histogram(stats, console)


def _print_histogram(stats: Stats, console: Any) -> None:
    bins = histogram(stats.lengths, limit=stats.max_length)
    if not bins:
        return
    peak = max(c for _, _, c in bins) or 1
    console.print(f"[bold]rendered length histogram ({stats.unit})[/]")
    for low, high, count in bins:
        bar = "█" * round(30 * count / peak)
        mark = ""
        if stats.max_length is not None and low <= stats.max_length < high:
            mark = f"  [red]◀ --max-length {stats.max_length:,}[/]"
        over = stats.max_length is not None and low > stats.max_length
        console.print(
            f"{low:>7,}-{high - 1:<7,} {'[red]' if over else ''}{bar:<30}{'[/]' if over else ''} {count:>6,}{mark}"
        )


def pyplot() -> Any:
    """``matplotlib.pyplot``, drawing to files; an ImportError that says how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError('--plot needs matplotlib, which is not installed: pip install -e ".[plot]"') from exc
    return plt


def plot(stats: Stats, path: str) -> None:
    """Write the length histogram, with the ``--max-length`` line, as a PNG (needs matplotlib)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.hist(list(stats.lengths), bins=min(60, max(10, len(stats.lengths) // 10)), color="#4878d0", edgecolor="white")
    if stats.max_length is not None:
        ax.axvline(
            stats.max_length,
            color="#d62728",
            linestyle="--",
            label=f"max-length {stats.max_length:,}: {stats.rows_cut:,} rows cut",
        )
        ax.legend()
    ax.set_xlabel(f"rendered length ({stats.unit})")
    ax.set_ylabel("rows")
    ax.set_title(f"{stats.report.source}: {stats.rows:,} rows")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
