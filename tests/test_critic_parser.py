"""The tolerant feedback parser against a corpus of realistic model replies, and thousands of damaged ones."""

import json
from pathlib import Path

import numpy as np
import pytest

from image_poser.core import Feedback
from image_poser.feedback import mutate_reply, parse_feedback
from image_poser.shapes.decompose import task_from_prompt

FIXTURES = [
    json.loads(line)
    for line in (Path(__file__).resolve().parents[1] / "data" / "critic_replies.jsonl").read_text(encoding="utf-8").splitlines()
]


def test_corpus_is_large_and_varied():
    assert len(FIXTURES) >= 30
    assert {"ok", "repaired", "partial", "failed"} <= {f["status"] for f in FIXTURES}


@pytest.mark.parametrize("fx", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_fixture(fx):
    task = task_from_prompt(fx["prompt"])
    fb = parse_feedback(fx["reply"], task)
    assert isinstance(fb, Feedback) and fb.raw is not None
    if fx["status"] is not None:
        assert fb.parse_status == fx["status"], (fb.parse_status, fb.issues)
    if fx["expected"] is not None:
        assert {v.requirement: v.satisfied for v in fb.verdicts} == fx["expected"]
    Feedback.from_json(fb.to_json())  # whatever came back is a valid, serialisable Feedback


def test_two_thousand_mutated_replies_never_raise():
    rng = np.random.default_rng(0)
    task = task_from_prompt(FIXTURES[0]["prompt"])
    replies = [f["reply"] for f in FIXTURES if f["reply"]]
    statuses = set()
    for k in range(2000):
        fb = parse_feedback(mutate_reply(replies[k % len(replies)], rng), task)
        statuses.add(fb.parse_status)
        assert not any(i.startswith("parser error") for i in fb.issues), fb.issues
    assert {"failed", "partial"} <= statuses


def test_non_string_replies_are_failures_not_crashes():
    task = task_from_prompt(FIXTURES[0]["prompt"])
    for junk in [None, 42, b"bytes", ["list"], {"verdicts": []}]:
        assert parse_feedback(junk, task).parse_status == "failed"
