"""The Evaluator is never imported by training code paths (critic, experts, decomposers, and later env and trainers)."""

from fresh_import import modules_after_import

EVALUATORS = {"image_poser.evaluator", "image_poser.shapes.evaluator"}
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
    loaded = modules_after_import(*TRAINING_MODULES)
    assert set(TRAINING_MODULES) <= loaded and not EVALUATORS & loaded, sorted(EVALUATORS & loaded)


def test_backends_import_nothing_from_the_shapes_world():
    "The real-model adapters stand alone: importing every backend module loads no image_poser.shapes module."
    loaded = modules_after_import("image_poser.backends.llm", "image_poser.backends.diffusers", "image_poser.backends.vqa")
    assert not [m for m in loaded if m.startswith("image_poser.shapes")], sorted(loaded)
