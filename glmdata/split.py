"""Deterministic train/eval split, stratified so that tool-call rows land in both parts.

Two streaming passes over the input: the first classifies rows (one byte per row), the second
writes them. Same input, fraction and seed give the same split on any machine. An exact duplicate
goes to the part its first copy went to, so no eval row is also a train row.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from glmdata.checks import tool_call
from glmdata.convert import Options, convert_file
from glmdata.io import atomic_writer, dump_row
from glmdata.models import MessageDict
from glmdata.report import Report

PLAIN, TOOLS, CALLS = 0, 1, 2
STRATA = {PLAIN: "no tools", TOOLS: "tools declared, no calls", CALLS: "tool calls"}


@dataclass
class SplitResult:
    report: Report
    train: int
    eval: int
    per_stratum: dict[str, tuple[int, int]]  # name -> (train, eval)


def stratum(messages: Sequence[MessageDict]) -> int:
    if any(tool_call(m) is not None for m in messages):
        return CALLS
    if any(m.get("tools") for m in messages):
        return TOOLS
    return PLAIN


def choose_eval(strata: bytearray, fraction: float, seed: int, copies: dict[int, int] | None = None) -> set[int]:
    """Indices (into ``strata``) of the eval rows: ``fraction`` of each stratum, at least one row of
    every stratum that has two or more rows, so both parts see every kind of row. ``copies`` maps
    the position of a duplicate to the position of its first copy; duplicates follow their first
    copy instead of being drawn."""
    copies = copies or {}
    rng = random.Random(seed)
    chosen: set[int] = set()
    for kind in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == kind and i not in copies]
        take = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        chosen.update(rng.sample(members, take))
    chosen.update(position for position, first in copies.items() if first in chosen)
    return chosen


def split_file(
    path: str, train_path: str, eval_path: str, *, fraction: float, seed: int, options: Options = Options()
) -> SplitResult:
    """Split the valid rows of ``path`` into two JSONL files (written atomically)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the eval fraction must be between 0 and 1, not {fraction}")
    strata = bytearray()
    report = Report(path)
    position_of: dict[int, int] = {}  # source index -> position among written rows (first copies only)
    copies: dict[int, int] = {}
    for result in convert_file(path, options):
        report.add(result)
        if result.ok:
            if result.duplicate_of is not None:
                copies[len(strata)] = position_of[result.duplicate_of]
            else:
                position_of[result.index] = len(strata)
            assert result.row is not None  # read with decode (the default)
            strata.append(stratum(result.row["messages"]))
    chosen = choose_eval(strata, fraction, seed, copies)
    counts = {name: [0, 0] for name in STRATA.values()}
    position = 0
    with atomic_writer(train_path) as train, atomic_writer(eval_path) as evaluation:
        for result in convert_file(path, options):
            if not result.ok:
                continue
            is_eval = position in chosen
            (evaluation if is_eval else train).write(dump_row(result.row))
            counts[STRATA[strata[position]]][is_eval] += 1
            position += 1
    n_eval = len(chosen)
    return SplitResult(report, len(strata) - n_eval, n_eval, {k: (v[0], v[1]) for k, v in counts.items() if any(v)})
