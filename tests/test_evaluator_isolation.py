"""The Evaluator is never imported by training code paths (critic, experts, decomposers, and later env and trainers)."""

import subprocess
import sys

TRAINING_MODULES = [
    "image_poser.critic",
    "image_poser.experts",
    "image_poser.feedback",
    "image_poser.decompose",
    "image_poser.backends.llm",
    "image_poser.shapes.perception",
    "image_poser.shapes.critic",
    "image_poser.shapes.experts",
    "image_poser.shapes.decompose",
    "image_poser.env",
    "image_poser.stack",
    "image_poser.benchmarks",
    "image_poser.ppo",
    "image_poser.dqn",
]


def test_training_code_does_not_import_the_evaluator():
    code = (
        "import importlib, importlib.util, sys\n"
        f"mods = {TRAINING_MODULES!r}\n"
        "loaded = [m for m in mods if importlib.util.find_spec(m) is not None]\n"
        "for m in loaded: importlib.import_module(m)\n"
        "print(len(loaded), any(m in sys.modules for m in ('image_poser.evaluator', 'image_poser.shapes.evaluator')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, imported = out.stdout.split()
    assert int(n) == len(TRAINING_MODULES) and imported == "False", out.stdout


def test_backends_import_nothing_from_the_shapes_world():
    "The real-model adapters stand alone: importing every backend module loads no image_poser.shapes module."
    code = (
        "import sys, image_poser.backends.llm, image_poser.backends.diffusers, image_poser.backends.vqa\n"
        "print(sorted(m for m in sys.modules if m.startswith('image_poser.shapes')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
