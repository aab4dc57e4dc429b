"""Scale out on Ray (`image_poser.distributed`): the same rows as the local path, failures as events, recovery from dead hosts.

The tests share one local Ray (`ray.init(num_cpus=2)`), started for this file and shut down after it: a Ray start takes
10-14 s on a loaded 2-core machine, so one per test (9 tests) put the file at 3:54. Tests release the actors they start.
Skipped when Ray is not installed (`pip install -e ".[dev,ray]"`; `.ci/run` installs the extra).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import torch

from image_poser import distributed as dist
from image_poser import ppo
from image_poser.env import EnvConfig, ImagePoserEnv, make_vector_env
from image_poser.evaluate import load_policy, run_episode, run_jobs
from image_poser.experts import Registry, call_expert
from image_poser.shapes.critic import ErrorModel, ShapesCritic
from image_poser.shapes.data import load_split
from image_poser.shapes.decompose import task_from_prompt
from image_poser.tune import run_jobs as run_train_jobs

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module: ship its classes by value

TWO = """
[[experts]]
name = "frontier"
class = "shapes.t2i"
cost = 8.0
max_tokens = 512
count_error = 0.2
num_cpus = 0.25

[[experts]]
name = "instruct"
class = "shapes.editor"
cost = 1.0
ops = ["recolor", "retexture", "resize", "remove", "add", "move", "background"]
success = 0.75
num_cpus = 0.25
replicas = 2
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def two(tmp_path) -> Path:
    p = tmp_path / "two.toml"
    p.write_text(TWO)
    return p


def local_two(path) -> Registry:
    return Registry([dist.build_expert(dist.split_entry(e)[0]) for e in dist.registry_entries(path)])


def local_rows(policy, cfg, recs, jobs, registry):
    env = ImagePoserEnv(cfg, registry=registry, records=recs)
    return [run_episode(env, load_policy(policy), recs[i], s) for i, s in jobs]


class Broken:
    name, kind, cost, max_tokens, good_at = "broken", "t2i", 1.0, 77, "always fails"

    def __call__(self, command, image=None, *, seed=0):
        raise RuntimeError("CUDA error: device-side assert triggered")


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'image_poser\[ray\]'"):
        dist.require_ray()


def test_evaluate_ray_rows_equal_local_rows(local_ray):
    cfg = EnvConfig(split="val")
    recs = load_split("val", n=12)
    jobs = [(i, s) for s in (0, 1) for i in range(len(recs))]
    for policy in ("baseline:fixed", "baseline:random"):
        local = run_jobs(policy, cfg, recs, jobs)
        remote = dist.evaluate_ray(policy, cfg, recs, jobs, num_workers=2)
        assert len(remote) == len(jobs) == 24
        assert [(r["id"], r["seed"]) for r in remote] == [(recs[i]["id"], s) for i, s in jobs]
        assert dist.comparable(remote) == dist.comparable(local), policy
    assert len({tuple(r["experts"]) for r in remote}) > 1  # the random policy really varied


def test_remote_registry_placement_pictures_and_round_robin(local_ray, two):
    reg = dist.remote_registry(two)
    here = local_two(two)
    assert reg.names == here.names == ["frontier", "instruct"]
    assert [len(e.hosts) for e in reg] == [1, 2]  # replicas = 2 in the entry
    assert isinstance(reg[0], dist.RemoteExpert) and reg.table() == here.table()
    img = reg[0]("two red circles left of a blue square", seed=4)
    assert img.tobytes() == here[0]("two red circles left of a blue square", seed=4).tobytes()
    for s in range(4):
        assert reg[1]("make the circles green", img, seed=s).tobytes() == here[1]("make the circles green", img, seed=s).tobytes()
    assert [ray.get(h.ready.remote(), timeout=60)["calls"] for h in reg[1].hosts] == [2, 2]
    with pytest.raises(ValueError, match="GPUs in all"):
        dist.remote_registry(two, num_gpus=1)
    bad = two.parent / "bad.toml"
    bad.write_text('[[experts]]\nname = "x"\nclass = "os.system"\n')
    with pytest.raises(ValueError, match="outside image_poser"):
        dist.remote_registry(bad, num_cpus=0.1)
    bad.write_text('[[experts]]\nname = "x"\nclass = "shapes.t2i"\nreplicas = 0\n')
    with pytest.raises(ValueError, match="replicas"):
        dist.remote_registry(bad, num_cpus=0.1)
    dist.release(reg)


def test_remote_failures_are_events_not_crashes_or_hangs(local_ray, two):
    frontier = local_two(two)[0]
    reg = dist.remote_registry(Registry([Broken(), dist.SlowExpert(frontier, 5.0)]), num_cpus=0.1, timeout_s=0.5, max_restarts=0)
    raised = call_expert(reg[0], "a red circle", seed=0)
    silent = call_expert(reg[1], "a red circle", seed=0)
    ray.kill(reg[0].hosts[0])
    gone = call_expert(reg[0], "a red circle", seed=0)
    assert "RuntimeError in its host: CUDA error" in raised.error
    assert "no answer from its host within 0.5 s" in silent.error and silent.wall_time_s < 3
    assert "host is gone" in gone.error
    # in an episode: a failed call with its penalty, the expert masked after max_expert_failures
    env = ImagePoserEnv(EnvConfig(split="val"), registry=Registry([reg[0], frontier]))
    obs, info = env.reset(seed=0)
    obs, r, term, trunc, info = env.step(0)
    assert env.trajectory().steps[-1].error and r < 0 and not term
    # a hosted critic that dies gives failed feedback, never an exception
    critic = dist.remote_critic(ShapesCritic(ErrorModel()), num_cpus=0.1, max_restarts=0)
    task = task_from_prompt("two red circles left of a blue square")
    img = frontier("two red circles left of a blue square", seed=1)
    assert critic.critique(img, task) == ShapesCritic(ErrorModel()).critique(img, task)
    ray.kill(critic.remote.hosts[0])
    fb = critic.critique(img, task)
    assert fb.parse_status == "failed" and "critic unavailable" in fb.issues[0]
    dist.release(reg)


def test_dead_host_restarts_and_evaluation_keeps_every_row_once(local_ray, two, tmp_path):
    here = local_two(two)
    marker = tmp_path / "crashed"
    crash = dist.CrashOnce("frontier", after=3, marker=str(marker))
    reg = dist.remote_registry(two, num_cpus=0.25, replicas=1, wrap=crash, max_restarts=2, max_task_retries=2)
    pid0 = ray.get(reg[0].hosts[0].ready.remote(), timeout=60)["pid"]
    cfg = EnvConfig(split="val")
    recs = load_split("val", n=8)
    jobs = [(i, 0) for i in range(len(recs))]
    rows = dist.evaluate_ray("baseline:fixed", cfg, recs, jobs, num_workers=2, registry=reg, num_cpus=0.25, chunk_size=1)
    pid1 = ray.get(reg[0].hosts[0].ready.remote(), timeout=60)["pid"]
    assert marker.exists() and int(marker.read_text()) == pid0 != pid1  # the host died mid-evaluation and was restarted
    assert [(r["id"], r["seed"]) for r in rows] == [(recs[i]["id"], s) for i, s in jobs]  # every row, none twice
    assert sum(r["errors"] for r in rows) == 0
    assert dist.comparable(rows) == dist.comparable(local_rows("baseline:fixed", cfg, recs, jobs, here))
    # killed from outside (restart allowed): the next call is served by a new host
    ray.kill(reg[1].hosts[0], no_restart=False)
    img = here[0]("a blue square", seed=2)
    assert reg[1]("make the square red", img, seed=0).tobytes() == here[1]("make the square red", img, seed=0).tobytes()
    assert reg[1]("make the square red", img, seed=1).tobytes() == here[1]("make the square red", img, seed=1).tobytes()
    dist.release(reg)


def test_ray_vector_env_steps_like_the_local_vector_env(local_ray):
    cfg = EnvConfig(split="val", horizon=3)
    sync = make_vector_env(2, cfg, seed=7)
    on_ray = dist.make_ray_vector_env(2, cfg, seed=7, num_cpus=0.5)
    assert on_ray.single_observation_space == sync.single_observation_space
    assert on_ray.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]
    a, b = dist.rollout(sync, 20, seed=3), dist.rollout(on_ray, 20, seed=3)
    assert sum("final_obs" in s for s in a) >= 3  # episodes ended (and were reset in the same step)
    assert dist.same_rollouts(a, b)
    assert not dist.same_rollouts(a, dist.rollout(sync, 20, seed=4))  # the comparison can fail
    assert on_ray.call("action_masks")[0].dtype == bool
    sync.close()
    on_ray.close()


def test_ppo_trains_the_same_on_ray_envs(local_ray, tmp_path, monkeypatch):
    args = dict(total_timesteps=64, num_envs=2, num_steps=32, progress=False)
    here = ppo.train(ppo.Args(**args, run_dir=str(tmp_path / "sync")))

    def ray_envs(n, config=None, asynchronous=False, seed=None, **kw):
        return dist.make_ray_vector_env(n, config, seed=seed, num_cpus=0.5, **kw)

    monkeypatch.setattr(ppo, "make_vector_env", ray_envs)  # what `--ray-envs` would do: the sub-environments in actors
    there = ppo.train(ppo.Args(**args, run_dir=str(tmp_path / "ray")))
    wa = torch.load(here / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(there / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    episodes = [(run / "metrics.jsonl").read_text().count("episodic_return") for run in (here, there)]
    assert episodes[0] == episodes[1] > 0  # the same episodes ended and were logged


def test_run_jobs_ray_trains_the_same_weights(local_ray, tmp_path):
    job = dict(total_timesteps=64, num_envs=2, num_steps=32, progress=False)
    (on_ray,) = dist.run_jobs_ray([("ppo", dict(job, run_dir=str(tmp_path / "ray")))], {"num_cpus": 1})
    (here,) = run_train_jobs([("ppo", dict(job, run_dir=str(tmp_path / "local")))], workers=1)
    assert set(on_ray) == set(here) == {"run", "train_s", "reused"} and not on_ray["reused"]
    wa = torch.load(Path(on_ray["run"]) / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(Path(here["run"]) / "checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    (again,) = dist.run_jobs_ray([("ppo", dict(job, run_dir=str(tmp_path / "ray")))])
    assert again["reused"]  # a finished identical run is reused, as locally
    with pytest.raises(ValueError, match="unknown resource keys"):
        dist.run_jobs_ray([("ppo", job)], {"gpus": 1})


def test_bench_distributed_reports_a_curve_with_equal_rows(local_ray):
    res = dist.bench_distributed(actors=(1, 2), episodes=3, time_scale=0.05)
    assert res["same_rows"] and res["episodes"] == 3 and res["layout"] == "hosts"
    assert set(res["episodes_per_s"]) == {1, 2} and all(v > 0 for v in res["episodes_per_s"].values())
    assert res["latency_s"] == {"frontier": 0.15, "instruct": 0.075}
    assert [p["actors"] for p in res["by_actors"]] == [1, 2] and res["by_actors"][0]["speedup"] == 1.0
    with pytest.raises(ValueError, match="layout"):
        dist.bench_distributed(actors=(1,), episodes=1, layout="cluster")
    assert np.isfinite(res["calls_per_episode"])


def test_evaluate_backend_ray_gives_the_same_summary(local_ray):
    "`evaluate(..., backend='ray')` (what `image-poser eval --backend ray` runs): the same summary bytes as the local path."
    import json

    from image_poser.evaluate import evaluate

    cfg = EnvConfig(split="val")
    _, local = evaluate("fixed", "val", n=4, seeds=(0, 1), config=cfg)
    _, remote = evaluate("fixed", "val", n=4, seeds=(0, 1), config=cfg, backend="ray", workers=2)
    assert json.dumps(local) == json.dumps(remote)
