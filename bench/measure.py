"""Running contenders: child processes, wall time, peak RSS, interleaved repeats, statistics."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def glmdata_command() -> list[str]:
    """The installed ``glmdata`` console script (what users run), else ``python -m glmdata``."""
    script = BIN / "glmdata"
    return [str(script)] if script.exists() else [PYTHON, "-m", "glmdata"]


class CommandFailed(RuntimeError):
    pass


@dataclass
class Run:
    """One finished child process."""

    wall: float  #: seconds from spawn to exit, measured by the parent
    max_rss: int  #: peak resident set size of the child, bytes (getrusage via wait4)
    returncode: int
    stdout: bytes
    stderr: bytes


# Linux starts a forked child's peak RSS (ru_maxrss) at its parent's size and keeps it across exec,
# so a command started from this (large) process would report at least this process's size. For
# a peak that is the command's own, a small launcher forks it and reports that grandchild's peak,
# which then starts from the launcher's ~10 MB.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"
)


def run_command(
    argv: Sequence[str],
    *,
    stdout_path: Path | None = None,
    ok_codes: Sequence[int] = (0,),
    env: dict | None = None,
    own_peak: bool = False,
) -> Run:
    """Run ``argv`` to completion. ``max_rss``: from ``os.wait4``; with ``own_peak``, through the
    launcher above, the command's own peak (its wall time then includes the launcher's start).

    stdout goes to ``stdout_path`` when given (data commands), else is captured; stderr is
    captured. Raises ``CommandFailed`` for an exit code not in ``ok_codes``.
    """
    if own_peak:
        peak_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-peak-{os.getpid()}"
        try:
            run = run_command(
                [PYTHON, "-c", _LAUNCHER, str(peak_path), *argv], stdout_path=stdout_path, ok_codes=ok_codes, env=env
            )
            run.max_rss = int(peak_path.read_text()) * 1024
        finally:
            peak_path.unlink(missing_ok=True)
        return run
    out_file = open(stdout_path, "wb") if stdout_path else None  # noqa: SIM115 - closed below
    err_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-stderr-{os.getpid()}"
    try:
        with open(err_path, "wb") as err_file:
            start = time.perf_counter()
            process = subprocess.Popen(
                list(argv),
                stdout=out_file or subprocess.PIPE,
                stderr=err_file,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env=env,
            )
            captured = process.stdout.read() if process.stdout else b""  # type: ignore[union-attr]
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_bytes()
    finally:
        if out_file:
            out_file.close()
        err_path.unlink(missing_ok=True)
    if process.returncode not in ok_codes:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-8:]
        raise CommandFailed(f"{' '.join(map(str, argv))} exited {process.returncode}:\n  " + "\n  ".join(tail))
    return Run(wall, usage.ru_maxrss * 1024, process.returncode, captured, stderr)


def run_task(name: str, *args: str, **options: Any) -> dict[str, Any]:
    """Run an in-process contender of ``bench.tasks`` in a fresh child; its JSON result plus
    ``wall`` (the child's whole life) and ``max_rss``."""
    argv = [PYTHON, "-m", "bench.tasks", name, *map(str, args)]
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key.replace('_', '-')}")
        elif value is not None and value is not False:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    run = run_command(argv)
    lines = run.stdout.decode().strip().splitlines()
    result = json.loads(lines[-1])
    result["wall"] = run.wall
    result["max_rss"] = run.max_rss
    return result


@dataclass
class Samples:
    """Repeated measurements of one contender (seconds per pass)."""

    name: str
    seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "min": self.min, "median": self.median, **self.extra}


def interleaved(
    contenders: dict[str, Callable[[], float]], repeats: int, *, log: Callable[[str], None] = print
) -> dict[str, Samples]:
    """Call each contender ``repeats`` times, round-robin, rotating the order every round so no
    contender always runs first (or right after a given other). Each callable returns seconds."""
    samples = {name: Samples(name) for name in contenders}
    names = list(contenders)
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            seconds = contenders[name]()
            samples[name].seconds.append(seconds)
            log(f"    round {round_ + 1}/{repeats}  {name:<34} {seconds:8.3f} s")
    return samples


class OtherLoad:
    """How busy the machine was with work other than this benchmark's, between two readings: the
    CPU time all processes used (``/proc/stat``) less what this process and its children used,
    as a share of the time all cores had. A shared machine's numbers are only as good as this is
    low: another job on one of two cores halves what two workers can gain."""

    def __init__(self) -> None:
        self.start = self._reading()

    @staticmethod
    def _reading() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")  # user nice system irq softirq steal
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        ours = sum(u.ru_utime + u.ru_stime for u in usage)
        return time.monotonic(), busy, ours

    def share(self) -> float | None:
        """The share (0 to 1) of all cores' time used by other processes since this was made."""
        end = self._reading()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall = (end[0] - self.start[0]) * (os.cpu_count() or 1)
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(max(other / wall, 0.0), 1.0)
