"""The fast paths give the same answers as the plain ones (issue 13).

Perception's compiled kernels (numba) against its NumPy path, on a few hundred varied pictures; the noise estimator
against its float32 definition; and determinism of the faster experts: the same seed gives the same picture.
"""

import numpy as np
import pytest
from PIL import Image

from image_poser.core import Task
from image_poser.experts import load_registry
from image_poser.shapes import perception as P
from image_poser.shapes.critic import ShapesCritic, _noise_sigma_reference, noise_sigma
from image_poser.shapes.data import sample_spec
from image_poser.shapes.decompose import requirements
from image_poser.shapes.experts import degrade
from image_poser.shapes.scene import BACKGROUNDS, Scene, apply_edits, layout, render


def pictures(n: int, seed: int = 0) -> list[np.ndarray]:
    "Clean, blurred, noisy and overlapping pictures, on every background (some with objects close to its colors)."
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        overlap = i % 3 == 0
        scene, _ = layout(apply_edits(sample_spec(i % 4 + 1, rng))[0], rng, allow_overlap=overlap, ignore_relations=overlap)
        if i % 5 == 0:
            scene = Scene(scene.objects, BACKGROUNDS[(i // 5) % len(BACKGROUNDS)], scene.size)
        img = render(scene)
        if i % 2:
            img = degrade(img, rng, blur=float(rng.choice([0.0, 0.15, 0.5, 1.0])), noise=float(rng.uniform(0, 12)))
        out.append(np.asarray(img))
    return out


@pytest.fixture(scope="module")
def pics():
    return pictures(300)


def same_percept(p: P.Percept, q: P.Percept) -> bool:
    bp, bq = p.background_model, q.background_model
    same_bg = (
        bp.name == bq.name and bp.distance == bq.distance and np.array_equal(bp.rows, bq.rows) and np.array_equal(bp.colors, bq.colors)
    )
    return p.objects == q.objects and p.shape_iou == q.shape_iou and p.background == q.background and same_bg


def test_compiled_percepts_identical(pics):
    pytest.importorskip("numba")
    n_objects = 0
    backgrounds = set()
    for k, a in enumerate(pics):
        fast, ref = P._perceive_compiled(a), P._perceive_numpy(a)
        assert same_percept(fast, ref), (k, fast.objects, ref.objects)
        n_objects += len(ref.objects)
        backgrounds.add(ref.background)
    assert n_objects > 800 and set(BACKGROUNDS) <= backgrounds  # a varied sample, not a vacuous one


def test_compiled_other_sizes_and_edge_cases():
    pytest.importorskip("numba")
    rng = np.random.default_rng(3)
    cases = [np.zeros((16, 16, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)]
    for size in (96, 200):
        spec = apply_edits(sample_spec(3, rng))[0]
        cases.append(np.asarray(render(layout(spec, rng, size=size)[0])))
    for a in cases:
        assert same_percept(P._perceive_compiled(a), P._perceive_numpy(a))


def test_environment_variable_selects_the_path(monkeypatch, pics):
    pytest.importorskip("numba")
    assert P.compiled_perception()
    monkeypatch.setenv(P.NUMBA_ENV, "0")
    assert not P.compiled_perception()
    assert same_percept(P.perceive(Image.fromarray(pics[1])), P._perceive_numpy(pics[1]))


def test_noise_sigma_matches_its_definition(pics, monkeypatch):
    imgs = [Image.fromarray(a) for a in pics[:120]]
    want = [_noise_sigma_reference(im) for im in imgs]
    assert [noise_sigma(im) for im in imgs] == want
    assert sum(w > 0 for w in want) > 30  # noisy pictures are in the sample
    monkeypatch.setenv(P.NUMBA_ENV, "0")
    assert [noise_sigma(im) for im in imgs] == want


def test_experts_same_seed_same_picture():
    reg = load_registry()
    prompt = "Two small red circles left of a large striped blue square on a sky background, then make the square green."
    base = np.asarray(render(layout(apply_edits(sample_spec(3, np.random.default_rng(0)))[0], np.random.default_rng(1))[0]))
    image = Image.fromarray(base)
    for ex in reg:
        args = (prompt,) if ex.kind == "t2i" else ("make the circles blue", image)
        a, b, c = ex(*args, seed=5), ex(*args, seed=5), ex(*args, seed=6)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), ex.name
        if ex.kind == "t2i" or ex.noise > 0:
            assert np.asarray(a).tobytes() != np.asarray(c).tobytes(), ex.name


def test_degrade_noise_level_and_determinism():
    gray = Image.new("RGB", (128, 128), (128, 128, 128))
    for level in (1.5, 4.0, 10.0):
        d = np.asarray(degrade(gray, np.random.default_rng(7), 0, level), np.float32) - 128
        assert abs(d.std() - level) < 0.05 * level + 0.05 and abs(d.mean()) < 0.15
    x = np.asarray(degrade(gray, np.random.default_rng(9), 0.4, 3.0))
    assert x.tobytes() == np.asarray(degrade(gray, np.random.default_rng(9), 0.4, 3.0)).tobytes()


def test_critic_cache_changes_nothing(pics):
    spec = sample_spec(3, np.random.default_rng(2))
    task = Task(prompt="(test)", requirements=requirements(spec))
    cached, fresh = ShapesCritic(seed=3, cache_size=8), ShapesCritic(seed=3, cache_size=0)
    for a in pics[:20] + pics[:20]:  # the second round is served from the cache
        img = Image.fromarray(a)
        assert cached.critique(img, task) == fresh.critique(img, task)
    assert len(cached._looks) == 8
