"""Training robustness: same seed same metrics, checkpoints that load safely or fail clearly (SIGKILL and exact resume: test_resume.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).with_name("image-poser"))
ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--num-envs", "2", "--env.split", "val", "--env.horizon", "3", "--no-progress"]
SMALL = COMMON + ["--num-steps", "16"]  # PPO


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_same_seed_same_metrics(tmp_path, algo):
    extra = COMMON + ["--learning-starts", "32", "--batch-size", "16"] if algo == "dqn" else SMALL
    for name in ("a", "b"):
        subprocess.run(
            [EXE, "train", "--algo", algo, "--total-timesteps", "128", "--run-dir", str(tmp_path / name), *extra],
            check=True,
            capture_output=True,
            timeout=600,
            cwd=ROOT,
        )
    ra, rb = tmp_path / "a" / f"{algo}-1", tmp_path / "b" / f"{algo}-1"
    assert _metrics(ra) == _metrics(rb) and len(_metrics(ra)) > 0


def test_checkpoints_evaluate_and_fail_clearly(tmp_path):
    subprocess.run(
        [EXE, "train", "--algo", "ppo", "--total-timesteps", "64", "--run-dir", str(tmp_path), *SMALL],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=ROOT,
    )
    run = tmp_path / "ppo-1"
    out = subprocess.run(
        [EXE, "eval", "--policy", str(run), "--split", "val", "--n", "2", "--seeds", "0", "--json", "--out-dir", str(tmp_path / "res")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    from image_poser.evaluate import evaluate

    _, summary = evaluate(str(run), "val", 2, (0,))
    cli_summary = json.loads(out.stdout)
    for k in ("alignment", "full_success", "fidelity", "cost", "calls"):  # the command line reports what the library measures
        assert cli_summary[k] == summary[k], (k, cli_summary[k], summary[k])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    out = subprocess.run([EXE, "eval", "--policy", str(bad), "--n", "1"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "not a readable checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_training_length_chosen_on_validation(tmp_path):
    "`train --keep-checkpoints` keeps one checkpoint per save; `tune steps` chooses among them on validation and writes ppo_steps.json."
    run = [EXE, "train", "--algo", "ppo", "--total-timesteps", "128", "--checkpoint-every", "1", "--keep-checkpoints"]
    subprocess.run([*run, "--run-dir", str(tmp_path), *SMALL], check=True, capture_output=True, timeout=600, cwd=ROOT)
    kept = sorted(p.name for p in (tmp_path / "ppo-1" / "checkpoints").glob("*.pt"))
    assert kept == [f"step_{n:09d}.pt" for n in (32, 64, 96, 128)]
    tune = [EXE, "tune", "steps", "--run-dir", str(tmp_path / "ppo-1"), "--grid", "2", "--stage1-n", "2", "--stage2-n", "2"]
    out = subprocess.run(
        [*tune, "--finalists", "1", "--workers", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "ppo_steps.json").read_text())
    assert json.loads(out.stdout) == res["chosen_steps"] and sorted(res["steps"].values()) == [64, 128]
