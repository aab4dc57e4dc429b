"""The console script end to end, as a user runs it (a subprocess, not an import)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import image_poser

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("image-poser")


def cli(*args, check=True, timeout=300):
    r = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=os.environ.copy())
    if check and r.returncode != 0:
        raise AssertionError(f"image-poser {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def test_help_lists_subcommands():
    out = cli("--help").stdout
    for sub in ("version", "parse", "render", "data", "bench", "eval", "run", "train", "experts", "demo", "reproduce"):
        assert f" {sub} " in out or f"{{{sub}," in out or f",{sub}," in out or f",{sub}}}" in out, (sub, out)


def test_version():
    assert cli("version").stdout.strip() == image_poser.__version__
    assert json.loads(cli("version", "--json").stdout) == {"version": image_poser.__version__}


def test_unknown_subcommand_fails_cleanly():
    r = cli("frobnicate", check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_parse_json_is_a_valid_task():
    from image_poser.core import Task

    r = cli("parse", "three small yellow stars below a large blue square; then make the square red", "--json")
    task = Task.from_json(r.stdout)
    assert [q.kind for q in task.requirements].count("edit") == 1
    assert [c.kind for c in task.commands] == ["generate", "edit"]


def test_parse_empty_prompt_is_a_clean_error():
    r = cli("parse", "  ", check=False)
    assert r.returncode == 2 and "empty prompt" in r.stderr and "Traceback" not in r.stderr


def test_render_writes_the_exact_scene(tmp_path):
    from PIL import Image

    from image_poser.shapes.perception import perceive

    out = tmp_path / "x.png"
    cli("render", "two red circles left of a blue square on a black background", "-o", str(out))
    pc = perceive(Image.open(out))
    assert sorted((o.shape, o.color) for o in pc.objects) == [("circle", "red"), ("circle", "red"), ("square", "blue")]
    assert pc.background == "black"


def test_data_is_reproducible_and_matches_the_committed_split(tmp_path):
    cli("data", "--out-dir", str(tmp_path), "--train", "2", "--val", "2", "--test", "12")
    fresh = (tmp_path / "test.jsonl").read_text(encoding="utf-8").splitlines()
    committed = (ROOT / "data" / "shapes" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    assert fresh == committed


@pytest.mark.slow
def test_reproduce_smoke_end_to_end(tmp_path):
    "Every stage of `reproduce` at toy size; the summaries have the keys of `eval --json`; a rerun reuses the trainings."
    out, runs = tmp_path / "paper", tmp_path / "runs"
    cli("reproduce", "--profile", "smoke", "--out", str(out), "--run-dir", str(runs), timeout=900)
    main = json.loads((out / "results" / "main.json").read_text())
    methods = main["methods"]
    assert {"ppo", "dqn", "dqn:paper-state", "fixed", "threshold", "greedy", "oracle", "random"} <= set(methods)
    assert any(m.startswith("single:") for m in methods)
    ev = json.loads(
        cli(
            "eval", "--policy", "baseline:fixed", "--split", "test", "--n", "2", "--seeds", "0", "--json", "--out-dir", str(tmp_path / "ev")
        ).stdout
    )
    # eval --json leaves wall times out (they differ from run to run); summarize() still puts wall_time_s in main.json
    timeless = [{k for k in s if "wall_time" not in k} for s in methods.values()]
    assert all(keys == set(ev) for keys in timeless), "main.json summaries must have exactly the keys of eval --json"
    for f in [
        "README.md",
        "results/ablations.json",
        "results/targets.json",
        "results/ppo_steps.json",
        "results/learning_curves.png",
        "results/expert_usage.png",
        "results/ablations.png",
        "results/gallery_ppo.png",
        "results/gallery_dqn.png",
        "checkpoints/ppo.pt",
        "checkpoints/dqn.pt",
    ]:
        assert (out / f).exists(), f
    targets = json.loads((out / "results" / "targets.json").read_text())["targets"]
    assert {t["target"].split()[0] for t in targets} == {"alignment", "full", "tiers", "fidelity"}
    assert all(isinstance(t["met"], bool) and "value" in t for t in targets)
    report = (out / "README.md").read_text()
    assert "## Main table" in report and "## Ablations" in report and "| ppo |" in report
    steps = json.loads((out / "results" / "ppo_steps.json").read_text())
    assert steps["chosen_steps"] in steps["steps"].values() and "training length chosen on validation" in report
    again = cli("reproduce", "--profile", "smoke", "--out", str(out), "--run-dir", str(runs), timeout=900)
    # every training run reused: PPO, DQN, the paper-state DQN and the smoke profile's two ablation runs (reference, reorder)
    assert again.stdout.count(": reused") == 5 and ": trained" not in again.stdout
    assert "reused baseline_tuning.json" in again.stdout and "reused ppo_tuning.json" in again.stdout
    assert "reused ppo_steps.json" in again.stdout


def test_reproduce_rejects_bad_workers():
    r = cli("reproduce", "--profile", "smoke", "--workers", "0", check=False)
    assert r.returncode == 2 and "workers" in r.stderr and "Traceback" not in r.stderr


def test_eval_json_is_byte_identical(tmp_path):
    "The same arguments print the same bytes and write the same JSON (wall times stay out of both)."
    args = ["eval", "--policy", "baseline:random", "--split", "val", "--n", "3", "--seeds", "0", "1", "--json"]
    a = cli(*args, "--out-dir", str(tmp_path / "a")).stdout
    b = cli(*args, "--out-dir", str(tmp_path / "b")).stdout
    assert a.encode() == b.encode() and "wall_time" not in a
    assert (tmp_path / "a" / "random.json").read_bytes() == (tmp_path / "b" / "random.json").read_bytes()
    assert json.loads(a)["n_episodes"] == 6


def test_run_refuses_prompts_with_problems(tmp_path):
    r = cli("run", "\u2026,,,;;;!!!???", "-o", str(tmp_path / "r"), check=False)
    assert r.returncode == 2 and "nothing to draw" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "final.png").exists()
    ok = cli("run", "two red circles left of a blue square", "--policy", "baseline:fixed", "-o", str(tmp_path / "ok"))
    assert json.loads(ok.stdout)["alignment"] > 0 and (tmp_path / "ok" / "final.png").exists()
