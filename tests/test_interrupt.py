"""Interrupted runs lose nothing and leave nothing half-written.

- ``glmdata convert`` stopped by SIGINT, SIGTERM or SIGHUP in the middle of a large input (the real
  console script, a real signal): exit 128 + signal, one line saying so, no output file, no rejects
  file, no temporary file, and an output that existed before is left as it was.
- The disk filling up (ENOSPC) while writing, or while syncing at the end: exit 2, one line naming
  the file, nothing written.
- ``glmtrain run`` killed (SIGKILL) after its first checkpoint resumes with ``--resume latest`` and
  ends with the same adapter and losses as a run that was never interrupted; a checkpoint cut short
  while being saved is skipped.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import chat_row
from test_train_support import TRAIN_ROWS, glmtrain_cli, glmtrain_env, tiny_model_dir, write_jsonl  # noqa: F401 - fixtures

import glmdata.io as gio
from glmdata.cli import app

SCRIPT = Path(sys.executable).with_name("glmdata")
ROWS = 300_000  # large enough that a conversion takes seconds even with --workers
BAD_EVERY = 5_000  # some rows are rejected, so a rejects file is being written too


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """A JSONL file of 300,000 distinct rows (~50 MB), one in 5,000 broken."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    good = (
        json.dumps(chat_row("what is the weather like today in city number {}?", "sunny and warm, about 25 degrees"))
        + "\n"
    )
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, ROWS, 10_000):
            out.write(
                "".join(
                    '{"messages": [' + "\n" if i % BAD_EVERY == 1 else good.replace("{}", str(i))
                    for i in range(start, start + 10_000)
                )
            )
    return path


def default_signals() -> None:
    """Popen ``preexec_fn``: the child starts with default SIGINT and SIGHUP handling, as from a
    terminal, even when the test runner was started in the background (``cmd &`` ignores SIGINT)
    or under ``nohup`` (ignores SIGHUP): glmdata keeps a signal its caller ignores, so the signal
    tests would otherwise test the runner's environment."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def wait_for_rows_written(directory: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the output's temporary file holds data: the conversion is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in temp_files(directory) if p.exists()):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    stderr = proc.communicate()[1] or b""  # None when the test sent it to DEVNULL
    raise AssertionError(f"no rows were being written (exit {proc.returncode}): {stderr.decode()[-2000:]}")


def assert_stopped_cleanly(proc: subprocess.Popen, sig: int, directory: Path, before: dict[str, bytes]) -> None:
    _, stderr = proc.communicate(timeout=60)
    text = stderr.decode()
    assert proc.returncode == 128 + sig, (proc.returncode, text[-2000:])
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1] == f"interrupted ({signal.Signals(sig).name}): no output file was written", lines
    assert {
        name: (directory / name).read_bytes() for name in files(directory)
    } == before  # nothing new, nothing changed


def workers_supported() -> bool:
    return (
        "--workers"
        in subprocess.run([str(SCRIPT), "convert", "--help"], capture_output=True, text=True, timeout=60).stdout
    )


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-workers-2"],
)
def test_signal_in_the_middle_of_a_large_file(tmp_path: Path, big_input: Path, sig: int, workers: int) -> None:
    if workers > 1 and not workers_supported():
        pytest.skip("this glmdata has no --workers")
    (tmp_path / "out.jsonl").write_bytes(b"an earlier run's output\n")
    before = {"out.jsonl": b"an earlier run's output\n"}
    args = [str(SCRIPT), "convert", str(big_input), "-o", "out.jsonl"] + (
        ["--workers", str(workers)] if workers > 1 else []
    )
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_signals
    )
    wait_for_rows_written(tmp_path, proc)
    assert proc.poll() is None, "the conversion finished before the signal: make the input larger"
    proc.send_signal(sig)
    assert_stopped_cleanly(proc, sig, tmp_path, before)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_while_reading_stdin(tmp_path: Path, sig: int) -> None:
    """Deterministic: the process is provably mid-run, blocked on the rest of its input."""
    args = [str(SCRIPT), "convert", "-", "-o", "out.jsonl", "--rejects", "bad.jsonl"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(args, cwd=tmp_path, preexec_fn=default_signals, **pipes)
    row = json.dumps(chat_row("a question", "an answer")).encode() + b"\n"
    proc.stdin.write(b"not json\n" + row * 5_000)  # more than the writers buffer: rows reach the temporary file
    proc.stdin.flush()
    wait_for_rows_written(tmp_path, proc)
    proc.send_signal(sig)
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() has nothing to send
    assert_stopped_cleanly(proc, sig, tmp_path, {})


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_workers_die_with_a_killed_main_process(tmp_path: Path) -> None:
    """SIGKILL gives the main process no chance to stop its pool: the workers must not be left
    blocked on the pool's queue forever."""
    if not workers_supported():
        pytest.skip("this glmdata has no --workers")
    # --workers 3: this process and two forked ones
    args = [str(SCRIPT), "convert", "-", "-o", "out.jsonl", "--workers", "3"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(args, cwd=tmp_path, preexec_fn=default_signals, **pipes)
    proc.stdin.write((json.dumps(chat_row("a question", "an answer")) + "\n").encode() * 5_000)
    proc.stdin.flush()  # then nothing more: the workers wait on an empty queue
    wait_for_rows_written(tmp_path, proc)
    time.sleep(0.3)
    workers = children(proc.pid)
    assert len(workers) >= 2, workers
    proc.kill()
    proc.wait(timeout=60)
    proc.stdin.close()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "worker processes outlived the main process"


def test_sighup_stays_ignored_under_nohup(tmp_path: Path) -> None:
    """A signal the caller ignores (``nohup`` ignores SIGHUP) is not turned back on."""
    code = (
        "import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        "from glmdata.cli.common import install_signal_handlers; install_signal_handlers(); "
        "print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, "
        "signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "True"], done.stderr


# ------------------------------------------------------------------------------ disk full


class FullDisk:
    """A file whose ``write`` fails with ENOSPC once ``room`` bytes are written, as a full disk does."""

    def __init__(self, stream, room: int):
        self.stream, self.room = stream, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "in.jsonl"
    path.write_text(
        "".join(
            ("not json" if i % 20 == 0 else json.dumps(chat_row(f"question {i}", "answer"))) + "\n"
            for i in range(2_000)
        ),
        encoding="utf-8",
    )
    return path


def convert_in(tmp_path: Path, monkeypatch, *args: str):
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("room", [0, 10_000])
@pytest.mark.parametrize("which", ["out.jsonl", "out.rejects.jsonl"])
def test_disk_full_while_writing(tmp_path: Path, rows_file: Path, monkeypatch, room: int, which: str) -> None:
    real = gio.atomic_writer

    @contextmanager
    def writer(path):
        with real(path) as out:
            yield FullDisk(out, room) if Path(path).name == which else out

    monkeypatch.setattr(gio, "atomic_writer", writer)
    (tmp_path / "out.jsonl").write_bytes(b"old\n")
    result = convert_in(tmp_path, monkeypatch, "convert", rows_file, "-o", "out.jsonl")
    assert result.exit_code == 2, result.output
    assert (
        result.stderr.strip()
        == f"error: {which}: No space left on device; free some space or write elsewhere (no output file was written)"
    )
    assert files(tmp_path) == ["data", "out.jsonl"] and (tmp_path / "out.jsonl").read_bytes() == b"old\n"


def test_disk_full_when_syncing_at_the_end(tmp_path: Path, rows_file: Path, monkeypatch) -> None:
    """Many file systems report a full disk only at fsync/close: the same clean error, naming the file."""

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gio.os, "fsync", fsync)
    clean = tmp_path / "data" / "clean.jsonl"
    clean.write_text(json.dumps(chat_row()) + "\n", encoding="utf-8")
    result = convert_in(tmp_path, monkeypatch, "convert", clean, "-o", "out.jsonl")
    assert result.exit_code == 2, result.output
    assert "out.jsonl: No space left on device" in result.stderr and "Traceback" not in result.output
    assert files(tmp_path) == ["data"]


def test_io_error_reading_the_input_is_reported(tmp_path: Path, monkeypatch) -> None:
    """An input that fails while being read (EIO on a bad disk or a network mount) is not mistaken for
    the end of the file: the rows before are accounted for and the failure is a rejected row."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(chat_row(f"q{i}", "a")) + "\n" for i in range(100)), encoding="utf-8")
    real_open = open

    class Failing:
        def __init__(self, stream):
            self.stream, self.calls = stream, 0

        def readinto(self, buffer):
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return self.stream.readinto(memoryview(buffer)[:1000])

        def __getattr__(self, name):
            return getattr(self.stream, name)

    def fake_open(file, mode="r", *args, **kwargs):
        stream = real_open(file, mode, *args, **kwargs)
        if str(file) == str(path) and "b" in mode:
            import io

            return io.BufferedReader(Failing(real_open(file, "rb", buffering=0)))
        return stream

    monkeypatch.setattr("builtins.open", fake_open)
    from glmdata.convert import convert_file

    results = list(convert_file(path))
    assert results[-1].rejected and results[-1].issues[0].code == "truncated-input"
    assert all(r.ok for r in results[:-1]) and 0 < len(results) - 1 < 100


# ------------------------------------------------------------------------------ glmtrain


def adapter(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def losses(directory: Path) -> dict[int, float]:
    state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def test_glmtrain_killed_mid_run_resumes_to_the_same_result(tmp_path: Path, glmtrain_env, tiny_model_dir) -> None:
    """SIGKILL after the first checkpoint (no chance to clean up), resume with --resume latest: the
    adapter and every logged loss equal an uninterrupted run's. The killed run is a real process;
    the uninterrupted one trains in this process meanwhile (2 cores), the resumed one after."""
    import torch

    data = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    common = [
        "run", data, "--model", "tiny-random", "--eval-split", "0", "--max-steps", "4", "--save-steps", "2",
        "--logging-steps", "1", "--tracker", "none", "--no-gradient-checkpointing", "--json",
        "--set", "sft.disable_tqdm=true",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "glmtrain", *map(str, common), "-o", str(killed)]
    env = {**os.environ, **glmtrain_env}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        whole = glmtrain_cli(*common, "-o", tmp_path / "whole")
        assert whole.exit_code == 0, whole.stderr[-3000:]
        deadline = time.monotonic() + 240
        while not (killed / "checkpoint-2" / "trainer_state.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.01)
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "adapter_model.safetensors").exists(), "the run finished before it was killed"
    # a save cut short by the kill: a newer checkpoint directory without its trainer_state.json
    newest = max(int(p.parent.name.split("-")[1]) for p in killed.glob("checkpoint-*/trainer_state.json"))
    partial = killed / "checkpoint-3"
    partial.mkdir(exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"cut sh")

    resumed = glmtrain_cli(*common, "-o", killed, "--resume", "latest")
    assert resumed.exit_code == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert Path(summary["resumed_from"]).name == f"checkpoint-{newest}" and summary["global_step"] == 4
    assert "checkpoint-3 incomplete" in resumed.stderr.replace("\n", "")

    expected, got = adapter(tmp_path / "whole"), adapter(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name
    whole_losses, resumed_losses = losses(tmp_path / "whole"), losses(killed)
    assert sorted(resumed_losses) == sorted(whole_losses) == [1, 2, 3, 4]
    assert resumed_losses == pytest.approx(whole_losses, rel=1e-4)
