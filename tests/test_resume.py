"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with `--resume` ends with the same weights, optimiser
state and metrics rows as an uninterrupted run with the same seed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

EXE = str(Path(sys.executable).with_name("image-poser"))
ROOT = Path(__file__).resolve().parents[1]
# 64-pixel pictures halve the cost of an environment step (about 8 ms of CPU instead of 17)
COMMON = ["--num-envs", "2", "--env.split", "val", "--env.horizon", "3", "--env.image-size", "64", "--no-progress"]
RUNS = {  # small, but long enough that a kill right after the first checkpoint leaves most of the run to do
    "ppo": "--total-timesteps 160 --num-steps 8 --checkpoint-every 2".split(),  # 10 updates, a checkpoint every 2
    # a replay buffer smaller than the run, so the resumed buffer must also wrap around exactly
    "dqn": "--total-timesteps 400 --learning-starts 32 --batch-size 16 --buffer-size 300 --checkpoint-every 64".split(),
}


def _cmd(algo, run_dir, *extra):
    return [EXE, "train", "--algo", algo, "--run-dir", str(run_dir), *COMMON, *RUNS[algo], *extra]


def _rows(run):
    "The metrics rows without the wall-clock ones (SPS)."
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]


def _tensors(state, prefix=""):
    "Every tensor in a (nested) state dict, by its path."
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if isinstance(state, dict):
        return {k: v for key, val in state.items() for k, v in _tensors(val, f"{prefix}/{key}").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for i, val in enumerate(state) for k, v in _tensors(val, f"{prefix}/{i}").items()}
    return {}


def _kill_after_first_checkpoint(cmd, ck: Path, timeout=120) -> float:
    "Start `cmd`, SIGKILL its process group as soon as `ck` exists; returns the seconds it ran."
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.perf_counter() - t0 < timeout and not ck.exists() and p.poll() is None:
            time.sleep(0.02)
        assert ck.exists(), "no checkpoint was written before the timeout"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL, f"the run ended by itself (exit {p.returncode}) before it could be killed"
    return time.perf_counter() - t0


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, algo):
    t0 = time.perf_counter()
    full = subprocess.Popen(_cmd(algo, tmp_path / "full"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "killed" / f"{algo}-1"
    ck = run / "checkpoint.pt"
    t_kill = _kill_after_first_checkpoint(_cmd(algo, tmp_path / "killed"), ck)
    killed = torch.load(ck, map_location="cpu", weights_only=True)
    t1 = time.perf_counter()
    out = subprocess.run(_cmd(algo, tmp_path / "killed", "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    t_resume = time.perf_counter() - t1
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout, out.stdout
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err[-3000:]
    a = torch.load(tmp_path / "full" / f"{algo}-1" / "checkpoint.pt", map_location="cpu", weights_only=True)
    b = torch.load(ck, map_location="cpu", weights_only=True)
    assert b["global_step"] > killed["global_step"], "the resumed run did not continue past the checkpoint it was killed after"
    assert a["global_step"] == b["global_step"]
    keys = ["model", "optimizer"] + (["target"] if algo == "dqn" else [])
    ta, tb = _tensors({k: a[k] for k in keys}), _tensors({k: b[k] for k in keys})
    assert ta.keys() == tb.keys() and len(ta) > 4
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"tensors that differ after resume: {differ[:8]}"
    ra, rb = _rows(tmp_path / "full" / f"{algo}-1"), _rows(run)
    steps = [r["global_step"] for r in rb]
    assert steps == sorted(steps), "global_step jumps back in the resumed run's metrics"
    assert len(ra) == len(rb) and ra == rb, f"metrics differ: {len(ra)} rows uninterrupted, {len(rb)} resumed"
    print(
        f"{algo}: killed after {t_kill:.1f} s at step {killed['global_step']}, resumed in {t_resume:.1f} s, total {time.perf_counter() - t0:.1f} s"
    )
