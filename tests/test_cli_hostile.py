"""Hostile but honest input to every command: each case must exit non-zero with exactly one non-empty line on stderr, never a
traceback, and quickly (validation fails before any heavy work).

Most cases run in process (`image_poser.cli.main`, exactly what the console script calls), so the sweep takes seconds; a
representative subset also runs as real subprocesses. `test_hostile_case_counts` prints how many cases each command gets.
"""

import collections
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from image_poser import cli, dqn, ppo

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("image-poser"))
LONG = "two red circles. " * 1300  # 22,100 characters: over the 20,000-character cap

# {name} placeholders are files made by the `files` fixture
CASES = [
    # no command, unknown command, unknown flag
    [],
    ["nosuch"],
    ["--nosuch"],
    ["version", "--nosuch"],
    # parse
    ["parse"],
    ["parse", ""],
    ["parse", "   "],
    ["parse", "a red circle", "extra"],
    ["parse", LONG],
    # render
    ["render", "a red circle", "--size", "0", "-o", "{out}/x.png"],
    ["render", "a red circle", "--size", "-5", "-o", "{out}/x.png"],
    ["render", "a red circle", "--size", "100000", "-o", "{out}/x.png"],
    ["render", "a red circle", "--size", "abc", "-o", "{out}/x.png"],
    ["render", "a red circle", "-o", "{out}"],
    ["render", "a red circle", "-o", "{file}/x.png"],
    ["render", "a red circle", "-o", "/sys/x.png"],
    ["render", "a red circle", "-o", "{out}/x.xyz"],
    ["render", "a red circle", "--seed", "-1", "-o", "{out}/x.png"],
    ["render", "hello world", "-o", "{out}/x.png"],
    ["render", "", "-o", "{out}/x.png"],
    # data
    ["data", "--train", "-1", "--out-dir", "{out}/d"],
    ["data", "--test", "abc", "--out-dir", "{out}/d"],
    ["data", "--val", "1000000", "--out-dir", "{out}/d"],
    ["data", "--out-dir", "{file}"],
    # bench
    ["bench", "nosuch"],
    ["bench", "world", "--seed", "-1"],
    ["bench", "experts", "--config", "{missing}"],
    ["bench", "experts", "--report", "{out}"],
    # experts
    ["experts", "list", "--config", "{missing}"],
    ["experts", "list", "--config", "{empty_toml}"],
    ["experts", "list", "--config", "{bad_toml}"],
    ["experts", "list", "--config", "{garbage_toml}"],
    ["experts", "list", "--config", "{deep_toml}"],
    ["experts", "list", "--config", "{negative_cost_toml}"],
    ["experts", "list", "--config", "{out}"],
    ["experts", "nosuch"],
    # eval: policies
    ["eval", "--policy", "baseline:nope", "--out-dir", "{out}/e"],
    ["eval", "--policy", "baseline:single:nope", "--out-dir", "{out}/e"],
    ["eval", "--policy", "single:instruct", "--out-dir", "{out}/e"],
    ["eval", "--policy", "fixed:generalist=nope", "--out-dir", "{out}/e"],
    ["eval", "--policy", "fixed:generalist", "--out-dir", "{out}/e"],
    ["eval", "--policy", "threshold:threshold=abc", "--out-dir", "{out}/e"],
    ["eval", "--policy", "threshold:threshold=nan", "--out-dir", "{out}/e"],
    ["eval", "--policy", "threshold:on_fail=maybe", "--out-dir", "{out}/e"],
    ["eval", "--policy", "random:foo=1", "--out-dir", "{out}/e"],
    ["eval", "--policy", "{corrupt_pt}", "--out-dir", "{out}/e"],
    ["eval", "--policy", "{missing}.pt", "--out-dir", "{out}/e"],
    ["eval", "--policy", "{ppo_obs3_pt}", "--out-dir", "{out}/e"],
    ["eval", "--policy", "{ppo_default_pt}", "--registry", "{small_registry}", "--out-dir", "{out}/e"],
    # eval: everything else
    ["eval", "--split", "nosuch", "--out-dir", "{out}/e"],
    ["eval", "--split", "../../etc/passwd", "--out-dir", "{out}/e"],
    ["eval", "--n", "-5", "--out-dir", "{out}/e"],
    ["eval", "--n", "0", "--out-dir", "{out}/e"],
    ["eval", "--n", "100000", "--out-dir", "{out}/e"],
    ["eval", "--n", "abc", "--out-dir", "{out}/e"],
    ["eval", "--seeds", "--out-dir", "{out}/e"],
    ["eval", "--seeds", "-1", "--out-dir", "{out}/e"],
    ["eval", "--seeds", "0", "0", "--out-dir", "{out}/e"],
    ["eval", "--workers", "0", "--out-dir", "{out}/e"],
    ["eval", "--workers", "-3", "--out-dir", "{out}/e"],
    ["eval", "--workers", "100000", "--out-dir", "{out}/e"],
    ["eval", "--oracle-n", "0", "--out-dir", "{out}/e"],
    ["eval", "--out-dir", "{file}"],
    ["eval", "--out-dir", "/sys/results"],
    ["eval", "--registry", "{missing}", "--out-dir", "{out}/e"],
    ["eval", "--registry", "{garbage_toml}", "--out-dir", "{out}/e"],
    ["eval", "--registry", "{deep_toml}", "--out-dir", "{out}/e"],
    # run
    ["run", "", "-o", "{out}/r"],
    ["run", "\u2026,,,;;;!!!???", "-o", "{out}/r"],
    ["run", "hello world", "-o", "{out}/r"],
    ["run", "two red circles", "--policy", "baseline:nope", "-o", "{out}/r"],
    ["run", "two red circles", "-o", "{file}"],
    ["run", "two red circles", "--seed", "-1", "-o", "{out}/r"],
    ["run", "two red circles", "--policy", "{ppo_obs3_pt}", "-o", "{out}/r"],
    ["run", LONG, "-o", "{out}/r"],
    # train: arguments (Args.__post_init__ and the parser)
    ["train", "--num-envs", "0", "--run-dir", "{out}/t"],
    ["train", "--num-envs", "abc", "--run-dir", "{out}/t"],
    ["train", "--env.horizon", "0", "--run-dir", "{out}/t"],
    ["train", "--checkpoint-every", "0", "--run-dir", "{out}/t"],
    ["train", "--learning-rate", "nan", "--run-dir", "{out}/t"],
    ["train", "--total-timesteps", "-1", "--run-dir", "{out}/t"],
    ["train", "--num-minibatches", "100000", "--run-dir", "{out}/t"],
    ["train", "--gamma", "2", "--run-dir", "{out}/t"],
    ["train", "--target-kl", "nan", "--run-dir", "{out}/t"],
    ["train", "--seed", "-1", "--run-dir", "{out}/t"],
    ["train", "--exp-name", "../x", "--run-dir", "{out}/t"],
    ["train", "--env.obs-mode", "nosuch", "--run-dir", "{out}/t"],
    ["train", "--env.split", "nosuch", "--run-dir", "{out}/t"],
    ["train", "--env.registry", "{missing}", "--run-dir", "{out}/t"],
    ["train", "--run-dir", "{file}"],
    ["train", "--nosuch", "3", "--run-dir", "{out}/t"],
    ["train", "--algo", "nosuch"],
    ["train", "--algo"],
    ["train", "--algo", "dqn", "--batch-size", "0", "--run-dir", "{out}/t"],
    ["train", "--algo", "dqn", "--buffer-size", "0", "--run-dir", "{out}/t"],
    ["train", "--algo", "dqn", "--exploration-fraction", "-1", "--run-dir", "{out}/t"],
    # train: checkpoints that cannot be resumed
    ["train", "--algo", "dqn", "--exp-name", "ppo", "--resume", "--run-dir", "{runs}"],
    ["train", "--algo", "ppo", "--exp-name", "dqn", "--resume", "--run-dir", "{runs}"],
    ["train", "--exp-name", "corrupt", "--resume", "--run-dir", "{runs}"],
    ["train", "--exp-name", "old", "--resume", "--run-dir", "{runs}"],
    ["train", "--exp-name", "other", "--resume", "--num-envs", "4", "--run-dir", "{runs}"],
    # demo, reproduce, tune
    ["demo", "--n", "0", "--out-dir", "{out}/demo"],
    ["demo", "--n-eval", "-1", "--out-dir", "{out}/demo"],
    ["demo", "--out-dir", "{file}"],
    ["reproduce", "--workers", "0"],
    ["reproduce", "--workers", "-3"],
    ["reproduce", "--profile", "nosuch"],
    ["reproduce", "--profile", "smoke", "--out", "{file}"],
    ["reproduce", "--profile", "smoke", "--run-dir", "{file}"],
    ["tune", "--stage1-n", "0", "--out", "{out}/tune"],
    ["tune", "--families", "nope", "--out", "{out}/tune"],
    ["tune", "--workers", "0", "--out", "{out}/tune"],
    ["tune", "--steps", "0", "ppo", "--out", "{out}/tune"],
    ["tune", "--out", "{file}"],
    ["tune", "nosuch"],
    ["tune", "steps", "--run-dir", "{out}", "--out", "{out}/tune"],
    ["tune", "steps", "--grid", "0", "--run-dir", "{out}", "--out", "{out}/tune"],
]
# the same checks, in real processes (one per command family)
SUBPROCESS = [
    ["nosuch"],
    ["render", "a red circle", "--size", "0", "-o", "{out}/x.png"],
    ["experts", "list", "--config", "{garbage_toml}"],
    ["eval", "--n", "0", "--out-dir", "{out}/e"],
    ["eval", "--policy", "{ppo_obs3_pt}", "--out-dir", "{out}/e"],
    ["run", "\u2026,,,;;;!!!???", "-o", "{out}/r"],
    ["train", "--num-envs", "0", "--run-dir", "{out}/t"],
    ["train", "--algo", "dqn", "--exp-name", "ppo", "--resume", "--run-dir", "{runs}"],
    ["tune", "--stage1-n", "0", "--out", "{out}/tune"],
]


def _fake_checkpoint(path: Path, algo: str, obs_dim: int = 3, n_actions: int = 2, fmt: int = 2, **arg_overrides):
    "A small but well-formed checkpoint (real networks of the given sizes) without training anything."
    mod = ppo if algo == "ppo" else dqn
    args = mod.Args(**arg_overrides)
    net = ppo.Agent(obs_dim, n_actions, args.hidden) if algo == "ppo" else dqn.QNetwork(obs_dim, n_actions, args.hidden)
    ck = {"format": fmt, "algo": algo, "model": net.state_dict(), "args": json.dumps(asdict(args)), "global_step": 0}
    ck |= {"obs_dim": obs_dim, "n_actions": n_actions, "iteration": 1, "optimizer": {}, "target": net.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("hostile")
    (d / "out").mkdir()
    (d / "a_file").write_text("not a folder")
    (d / "empty.toml").write_text("")
    (d / "bad.toml").write_text("x = [")
    (d / "garbage.toml").write_bytes(bytes(range(256)))
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000)
    (d / "negative.toml").write_text('[[experts]]\nname = "a"\nclass = "shapes.t2i"\ncost = -5\n')
    blocks = (ROOT / "configs" / "experts" / "shapes.toml").read_text().split("[[experts]]")
    (d / "small.toml").write_text("[[experts]]".join(blocks[:3]))  # the first two experts only
    (d / "corrupt.pt").write_bytes(b"\x00garbage")
    runs = d / "runs"
    _fake_checkpoint(runs / "ppo-1" / "checkpoint.pt", "ppo")
    _fake_checkpoint(runs / "dqn-1" / "checkpoint.pt", "dqn")
    _fake_checkpoint(runs / "old-1" / "checkpoint.pt", "ppo", fmt=1, exp_name="old")
    _fake_checkpoint(runs / "other-1" / "checkpoint.pt", "ppo", exp_name="other", num_envs=2)
    (runs / "corrupt-1").mkdir()
    (runs / "corrupt-1" / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    return {
        "out": str(d / "out"),
        "file": str(d / "a_file"),
        "missing": str(d / "no_such_file"),
        "empty_toml": str(d / "empty.toml"),
        "bad_toml": str(d / "bad.toml"),
        "garbage_toml": str(d / "garbage.toml"),
        "deep_toml": str(d / "deep.toml"),
        "negative_cost_toml": str(d / "negative.toml"),
        "small_registry": str(d / "small.toml"),
        "corrupt_pt": str(d / "corrupt.pt"),
        "ppo_obs3_pt": str(_fake_checkpoint(d / "ppo_obs3.pt", "ppo")),
        "ppo_default_pt": str(_fake_checkpoint(d / "ppo_default.pt", "ppo", obs_dim=202, n_actions=13)),
        "runs": str(runs),
    }


def _fill(argv: list[str], files: dict) -> list[str]:
    return [a.format(**files) if "{" in a else a for a in argv]


class _Hang(BaseException):
    "Raised by the alarm: not an Exception, so nothing in the command can turn it into an error message."


def _alarm(signum, frame):
    raise _Hang()


def _assert_one_line_failure(argv, code, err: str, seconds: float, limit: float):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"{argv[:4]} exited 0"
    assert "Traceback" not in err, f"{argv[:4]} printed a traceback:\n{err[-2000:]}"
    assert len(lines) == 1, f"{argv[:4]} printed {len(lines)} lines on stderr:\n{err[-2000:]}"
    assert lines[0].startswith("image-poser: error: "), lines[0]
    assert "helptext" not in lines[0] and "---" not in lines[0] and "\u2500" not in lines[0], f"a parser box leaked: {lines[0]}"
    assert seconds < limit, f"{argv[:4]} took {seconds:.1f} s"


@pytest.mark.parametrize("argv", CASES, ids=[f"{i:03d}-{' '.join(c)[:60]}" for i, c in enumerate(CASES)])
def test_hostile_in_process(argv, files, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a command that wrongly got past its checks writes here, never into the checkout
    argv = _fill(argv, files)
    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    except _Hang:
        pytest.fail(f"{argv[:4]} still ran after 60 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    _assert_one_line_failure(argv, code, err.getvalue(), time.perf_counter() - t0, 30)


def test_hostile_subprocesses(files, tmp_path):
    "A representative case of each command family in a real process (started together, to keep the wall time short)."
    procs = []
    for argv in SUBPROCESS:
        argv = _fill(argv, files)
        p = subprocess.Popen([EXE, *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append((argv, p, time.perf_counter()))
    for argv, p, t0 in procs:
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            pytest.fail(f"{argv[:4]} still ran after 180 s")
        _assert_one_line_failure(argv, p.returncode, err, time.perf_counter() - t0, 180)
        assert p.returncode == 2, (argv[:4], p.returncode)


def test_hostile_case_counts():
    "How many hostile cases each command gets (the lead reports these numbers)."
    counts = collections.Counter(c[0] if c and not c[0].startswith("-") and c[0] in cli.COMMANDS else "(none/unknown)" for c in CASES)
    print("\nhostile cases per command (in process):", dict(sorted(counts.items())), "total", len(CASES))
    print("hostile cases per command (subprocess):", dict(collections.Counter(c[0] for c in SUBPROCESS)), "total", len(SUBPROCESS))
    assert len(CASES) >= 60 and set(cli.COMMANDS) - {"version"} <= set(counts)
