"""Bad input for the shapes world: parse and perceive never crash on junk, and fail clearly where they must."""

import random
import string

import numpy as np
import pytest
from PIL import Image

from image_poser.shapes.decompose import task_from_prompt
from image_poser.shapes.parse import parse
from image_poser.shapes.perception import check, perceive


def test_parse_rejects_empty_and_non_strings():
    for bad in ["", "   ", "\n\t "]:
        with pytest.raises(ValueError, match="empty prompt"):
            parse(bad)
    with pytest.raises(TypeError):
        parse(42)


def test_parse_survives_random_unicode():
    rng = random.Random(0)
    alphabet = string.printable + "äöüßéèñ☃★♥→–—“”‘’…中文日本語한국어🙂🟥🔵\u200b\u0301"
    words = ["red", "circle", "then", "make", "the", "left of", "background", "3", "stars", "remove", ",", ".", "dotted"]
    for _ in range(400):
        parts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) if rng.random() < 0.5 else rng.choice(words)
            for _ in range(rng.randint(1, 30))
        ]
        text = " ".join(parts)
        if not text.strip():
            continue
        res = parse(text)  # must not raise
        assert isinstance(res.problems, list) and isinstance(res.unparsed, list)
        task_from_prompt(text)  # the derived task must validate too


def test_parse_handles_a_10000_token_prompt():
    text = ("a red circle left of a blue square and " * 1200) + "then remove the square. " + ("blah " * 3000)
    res = parse(text)
    assert len(res.spec.groups) <= 32
    assert any("too many objects" in p for p in res.problems)


@pytest.mark.parametrize(
    "img",
    [
        Image.new("RGB", (128, 128), "white"),  # nothing there
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)),  # noise
        Image.new("L", (64, 64), 128),  # grayscale
        Image.new("RGBA", (96, 96), (255, 0, 0, 128)),  # alpha
        Image.new("RGB", (8, 8), "red"),  # tiny
        Image.new("RGB", (256, 256), "navy"),  # larger than the world's default
    ],
)
def test_perceive_never_crashes(img):
    pc = perceive(img)
    task = task_from_prompt("two red circles left of a blue square on a black background")
    res = check(task, pc.objects, pc.background)
    assert len(res.verdicts) == len(task.requirements)


def test_perceive_rejects_non_images():
    with pytest.raises(ValueError, match="RGB"):
        perceive(np.zeros((4, 4)))
