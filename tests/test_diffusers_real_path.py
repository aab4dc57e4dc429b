"""The real diffusers path end to end, offline: tiny random pipelines of every kind, loaded through a registry file,
called by the environment in one episode judged by the default shapes critic (the pictures are noise; every step must
still be recorded without an error)."""

import time

import numpy as np
import pytest

from image_poser.backends import diffusers as lib
from image_poser.backends.diffusers import make_tiny_pipeline
from image_poser.env import ImagePoserEnv
from image_poser.experts import load_registry

PROMPT = "a large red circle left of a small blue square on a white background, then make the circle green"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    for kind in ("text2image", "instruct_pix2pix", "inpaint"):
        make_tiny_pipeline(tmp / kind, kind)
    common = "steps = 2\ncache_dir = '{}'\ncache_max_bytes = 2_000_000\n".format(tmp / "cache")
    entries = [
        ("tiny-t2i", "text2image", "text2image", "height = 64\nwidth = 64\ncost = 1.0\n"),
        ("tiny-img2img", "text2image", "img2img", "strength = 0.5\ncost = 0.5\n"),  # same weights as tiny-t2i: from_pipe
        ("tiny-ip2p", "instruct_pix2pix", "instruct_pix2pix", "image_guidance_scale = 1.5\ncost = 0.5\n"),
        ("tiny-inpaint", "inpaint", "inpaint", 'strength = 0.9\nlocator = "image_poser.shapes.experts.edit_targets"\ncost = 0.5\n'),
    ]
    text = "".join(
        f'[[experts]]\nname = "{name}"\nclass = "diffusers"\nmodel = "{tmp / folder}"\npipeline = "{pipeline}"\n{common}{extra}\n'
        for name, folder, pipeline, extra in entries
    )
    (tmp / "tiny.toml").write_text(text)
    return load_registry(tmp / "tiny.toml")


def test_one_episode_through_every_pipeline_kind(registry):
    assert [e.pipeline for e in registry] == ["text2image", "img2img", "instruct_pix2pix", "inpaint"]
    lib.RESIDENCY.clear()
    loads0, shared0 = lib.RESIDENCY.loads, lib.RESIDENCY.shared
    env = ImagePoserEnv(registry=registry, horizon=6, image_size=64)
    obs, info = env.reset(seed=0, options={"prompt": PROMPT})
    assert info["action_mask"][1:4].sum() == 0  # editors wait for a picture
    t0 = time.perf_counter()
    for action in [0, 1, 2, 3, 1]:  # generate, then every kind of editor, then img2img again (resident now)
        assert info["action_mask"][action], (action, info["action_mask"])
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(obs).all() and np.isfinite(reward)
        if terminated or truncated:
            break
    elapsed = time.perf_counter() - t0
    steps = env.steps
    assert [s.expert for s in steps] == ["tiny-t2i", "tiny-img2img", "tiny-ip2p", "tiny-inpaint", "tiny-img2img"][: len(steps)]
    assert len(steps) == 5, [s.expert for s in steps]
    for s in steps:
        assert s.error is None, (s.expert, s.error)
        assert s.image is not None and s.feedback is not None and 0.0 <= s.feedback.alignment <= 1.0, s
    assert env.image.size == (64, 64) and env.image.mode == "RGB"
    # the shared weights: img2img was derived from the resident text-to-image pipeline, never loaded on its own
    assert lib.RESIDENCY.shared - shared0 >= 1 and lib.RESIDENCY.loads - loads0 <= 4, lib.RESIDENCY.stats()
    print(f"5 steps in {elapsed:.2f} s; residency {lib.RESIDENCY.stats()}")
    lib.RESIDENCY.clear()


def test_the_same_episode_again_is_identical_and_served_from_the_cache(registry):
    def run():
        env = ImagePoserEnv(registry=registry, horizon=6, image_size=64)
        env.reset(seed=1, options={"prompt": PROMPT})
        for action in [0, 1, 3]:
            env.step(action)
        return [s.image for s in env.steps], np.asarray(env.image)

    lib.RESIDENCY.clear()
    refs, img = run()
    hits = registry[0]._cache.hits
    loads = lib.RESIDENCY.loads
    t0 = time.perf_counter()
    refs2, img2 = run()
    cached = time.perf_counter() - t0
    assert refs == refs2 and np.array_equal(img, img2)  # same seed, same pictures
    assert registry[0]._cache.hits > hits and lib.RESIDENCY.loads == loads  # nothing was loaded again: every call hit the cache
    assert cached < 5.0, cached
    lib.RESIDENCY.clear()


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    "tools/gpu_check.sh --tiny: the GPU check's every measurement, on SDXL-architecture pipelines a few channels wide."
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.json"
    env = {"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["bash", "tools/gpu_check.sh", "--tiny", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert json.loads(proc.stdout) == r  # printed and written
    assert set(r) >= {"device", "build", "experts", "residency", "cache", "sharing", "offload", "episode", "total_s"}
    by_name = {e["name"]: e for e in r["experts"]}
    assert set(by_name) == {"sdxl", "sdxl-img2img", "sdxl-inpaint", "instruct-pix2pix"}
    assert all(e["ok"] and e["cold_load_s"] > 0 and e["warm_call_s"] > 0 for e in r["experts"]), r["experts"]
    assert by_name["sdxl-img2img"]["derived_with_from_pipe"] and by_name["sdxl-inpaint"]["derived_with_from_pipe"]
    assert not by_name["sdxl"]["derived_with_from_pipe"]
    assert r["sharing"]["shared"]["extra_weight_bytes"] == 0 and r["sharing"]["saved_weight_bytes"] > 0
    assert r["residency"]["evictions"] >= 1 and r["residency"]["derived"] >= 1
    assert r["cache"]["speedup"] > 1
    if r["device"] == "cpu":
        assert all("skipped" in r["offload"][m]["notes"][0] for m in ("model", "sequential"))
        assert all(e["peak_gpu_bytes"] is None for e in r["experts"])
    assert r["episode"]["errors"] == 0 and len(r["episode"]["steps"]) == 4
