"""The account of a conversion: rows in = rows out + rejected + deduplicated, always.

Counts every repair and every check code with a few example row numbers, and prints as a rich
table (stderr) or a JSON document (``--report`` / ``--json``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from glmdata.issues import CODES, Issue
from glmdata.repairs import REPAIRS
from glmdata.result import Result

EXAMPLES = 5


class Report:
    """Accumulates :class:`~glmdata.result.Result` objects."""

    def __init__(self, source: str | None = None):
        self.source = source
        self.rows_in = self.rows_out = self.rejected = self.deduplicated = 0
        self.formats: Counter[str] = Counter()
        self.repairs: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.examples: dict[str, list[int]] = defaultdict(list)
        self.first_messages: dict[str, str] = {}

    def add(self, result: Result) -> None:
        self.rows_in += 1
        if result.format:
            self.formats[result.format] += 1
        if result.deduplicated:
            self.dropped_duplicate(result.index)
        elif result.rejected:
            self.rejected += 1
        else:
            self.rows_out += 1
        for name in dict.fromkeys(name for name, _ in result.repairs):
            self.repairs[name] += 1
            self.example(f"repair:{name}", result.index)
        for issue in result.issues:
            self.count(issue, result.index)

    def dropped_duplicate(self, index: int) -> None:
        """Count row ``index`` as an exact duplicate dropped by --dedupe (its finding has no message)."""
        self.deduplicated += 1
        self.codes["duplicate"] += 1
        self.example("duplicate", index)

    def count(self, issue: Issue, index: int) -> None:
        """Count one finding of row ``index``: its code, an example row, the code's first message."""
        self.codes[issue.code] += 1
        self.example(issue.code, index)
        self.first_messages.setdefault(issue.code, f"row {index} {issue.path}: {issue.message}")

    def merge(self, other: Report) -> None:
        """Add the account of the rows that follow, kept in ``other`` (a chunk's report)."""
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejected += other.rejected
        self.deduplicated += other.deduplicated
        self.formats.update(other.formats)
        self.repairs.update(other.repairs)
        self.codes.update(other.codes)
        for key, rows in other.examples.items():
            for index in rows:
                self.example(key, index)
        for code, message in other.first_messages.items():
            self.first_messages.setdefault(code, message)

    def example(self, key: str, index: int) -> None:
        """Keep row ``index`` as an example of ``key`` (a check code, or ``repair:NAME``)."""
        rows = self.examples[key]
        if len(rows) < EXAMPLES and (not rows or rows[-1] != index):
            rows.append(index)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rejected + self.deduplicated

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rejected,
            "deduplicated": self.deduplicated,
            "formats": dict(self.formats),
            "repairs": {
                name: {"rows": n, "description": REPAIRS[name], "examples": self.examples[f"repair:{name}"]}
                for name, n in _by_count(self.repairs)
            },
            "checks": {
                code: {
                    "count": n,
                    "severity": CODES[code][0],
                    "examples": self.examples[code],
                    "first": self.first_messages.get(code, ""),
                    "hint": CODES[code][1],
                }
                for code, n in _by_count(self.codes)
            },
        }

    def print(self, console: Any) -> None:
        """Print the summary tables on a rich console (stderr)."""
        from rich.markup import escape
        from rich.table import Table

        title = escape(f"{self.source}: ") if self.source else ""
        console.print(
            f"[bold]{title}{self.rows_in} rows in[/] = [green]{self.rows_out} out[/] + "
            f"[red]{self.rejected} rejected[/] + [yellow]{self.deduplicated} deduplicated[/]"
            + (f"  (formats: {', '.join(f'{k} {v}' for k, v in self.formats.items())})" if self.formats else "")
        )
        if self.repairs:
            table = Table("repair", "rows", "example rows", title="repairs", title_justify="left")
            for name, n in _by_count(self.repairs):
                table.add_row(name, str(n), _rows(self.examples[f"repair:{name}"]))
            console.print(table)
        if self.codes:
            table = Table("check", "level", "count", "example rows", title="checks", title_justify="left")
            for code, n in sorted(self.codes.items(), key=lambda kv: (CODES[kv[0]][0] != "error", -kv[1], kv[0])):
                level = "[red]error[/]" if CODES[code][0] == "error" else "[yellow]warning[/]"
                table.add_row(code, level, str(n), _rows(self.examples[code]))
            console.print(table)


def _by_count(counter: Counter) -> list[tuple[str, int]]:
    """Most frequent first, ties by name: the same order however the rows were counted."""
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


def _rows(rows: list[int]) -> str:
    return ", ".join(map(str, rows))
