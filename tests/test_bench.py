"""`python -m bench` still runs and its output checks hold (same bytes, same ids and masks, same
results with 1 and 2 workers), on a few hundred rows. Ratios at this size mean nothing and are
not asserted: bench/RESULTS.md records them at full size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.mark.skipif(not (SHARED / "data" / "glaive_toolcall_zh_1k.json").is_file(), reason="needs ../shared/data (the bench's workload)")
def test_bench_runs_and_its_output_checks_hold(tmp_path: Path) -> None:
    sections = "floor,render,workers,memory" + (",tokenize" if (SHARED / "tokenizer" / "glm-4-9b-chat").is_dir() else "")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--rows", "300", "--repeats", "1", "--only", sections, "--memory-rows", "500", "--workers-rows", "600",
         "--startup-runs", "1", "--no-write", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = [line for line in proc.stdout.splitlines() if line.startswith(("- OK:", "- FAILED:"))]
    assert checks and not [line for line in checks if line.startswith("- FAILED")], "\n".join(checks)
    # the workers section measures start-up and the command's own conversion, and from them the
    # most two workers can gain on the file (Amdahl's law), so a miss can be told from a fault
    assert "most `convert --workers 2` can gain over 1 here" in proc.stdout
    assert "Halved perfectly, the command would gain" in proc.stdout
