"""Fault injection: no expert call may crash its caller, whatever the input; registry files fail clearly."""

import numpy as np
import pytest
from PIL import Image

from image_poser.experts import call_expert, load_registry
from image_poser.shapes.scene import Scene, SceneObject, render

REG = load_registry()
BASE = render(
    Scene([SceneObject("square", "blue", "large", "solid", 40, 40), SceneObject("star", "yellow", "small", "dotted", 90, 90)], "white")
)
JUNK_COMMANDS = [
    "",
    "   ",
    "a red circle " * 3000,
    "☃★♥ 中文 🙂\u200b",
    "make the unicorn sparkle",
    "remove remove remove",
    "then then then",
]
JUNK_IMAGES = [
    BASE,
    Image.new("RGB", (8, 8), "red"),
    Image.new("L", (128, 128), 0),
    Image.new("RGBA", (64, 200), (0, 0, 0, 0)),
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)),
]


@pytest.mark.parametrize("expert", list(REG), ids=REG.names)
def test_no_expert_crashes_on_junk(expert):
    for cmd in JUNK_COMMANDS:
        images = JUNK_IMAGES if expert.kind == "i2i" else [None]
        for img in images:
            r = call_expert(expert, cmd, img, seed=0, timeout_s=30)
            assert r.ok == (r.image is not None) == (r.error is None), r
            if r.ok:  # a picture of the expert's own size (t2i) or of the input's size (an editor), always RGB
                assert r.image.mode == "RGB" and r.image.size == ((128, 128) if img is None else img.size), (expert.name, r.image)
            else:
                assert isinstance(r.error, str) and r.error.strip(), r


def test_every_shapes_expert_is_reproducible():
    for e in REG:
        img = None if e.kind == "t2i" else BASE
        a = call_expert(e, "make the square red and add a green heart next to the star", img, seed=3)
        b = call_expert(e, "make the square red and add a green heart next to the star", img, seed=3)
        assert a.ok and b.ok
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image)), e.name


def test_unknown_edit_operation_in_config_is_rejected(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[[experts]]\nname = "x"\nclass = "shapes.editor"\nops = ["teleport"]\n')
    with pytest.raises(ValueError, match="teleport"):
        load_registry(p)


def test_gpu_registry_parses_without_loading_models():
    from image_poser.backends import diffusers as lib

    before = lib.RESIDENCY.stats()["loads"]
    reg = load_registry("configs/experts/diffusers-gpu.toml")
    assert len(reg.by_kind("t2i")) == 4 and len(reg.by_kind("i2i")) == 4
    assert all(not getattr(e, "trust_remote_code") for e in reg)
    assert lib.RESIDENCY.stats()["loads"] == before  # building experts loads nothing
    sdxl, img2img = reg[reg.index("sdxl")], reg[reg.index("sdxl-img2img")]
    assert sdxl._weights() == img2img._weights() and sdxl.share_weights  # img2img is built from sdxl with from_pipe
    assert {e.name for e in reg if e.offload == "model"} == {"flux-schnell", "flux-kontext"}
    assert all(e._cache is not None and e._cache.max_bytes for e in reg)


def test_diffusers_expert_failures_are_events(tmp_path):
    from image_poser.backends.diffusers import DiffusersExpert

    t2i = DiffusersExpert(name="gone", model=str(tmp_path / "nope"), pipeline="text2image")
    edit = DiffusersExpert(name="gone-edit", model=str(tmp_path / "nope"), pipeline="img2img")
    for expert, img in [(t2i, None), (edit, None), (edit, BASE)]:
        r = call_expert(expert, "a red circle", img, seed=0, timeout_s=30)
        assert not r.ok and r.image is None and r.error.strip(), r
