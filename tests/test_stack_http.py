"""The stack's model-backed pieces end to end, offline: a stand-in OpenAI-compatible server on 127.0.0.1 answers as the
critic (feedback JSON), the decomposer (a decomposition) and the VQA judge (yes/no with logprobs); the builders in
`image_poser.stack` talk to it over real HTTP, on a GenEval fixture record and a picture."""

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fresh_import import modules_after_import

from image_poser.backends.vqa import http_vqa_evaluator
from image_poser.benchmarks import load_prompts, record_task
from image_poser.critic import Critic
from image_poser.decompose import DECOMPOSE_PROMPT, Decomposer
from image_poser.evaluator import Evaluator
from image_poser.experts import Registry
from image_poser.stack import available_stacks, build_critic, build_decomposer, build_evaluator, build_stack, load_stack, stack_config

ROOT = Path(__file__).resolve().parents[1]
GENEVAL = ROOT / "tests" / "fixtures" / "benchmarks" / "geneval" / "evaluation_metadata.jsonl"


# ---------------------------------------------------------------- the stand-in server (reusable)


def _text_of(messages: list[dict]) -> str:
    "All text of the last user turn (string content or OpenAI content parts)."
    content = messages[-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p.get("type") == "text")


class StandIn:
    """An OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1 that plays three roles, chosen from the request:

    * VQA judge (the request asks for `logprobs`): answers Yes/No with top-5 logprobs; P(yes), P(no) come from `judge`,
      the first entry whose key is a substring of the question, else `default_judge`; a value of None answers without logprobs.
    * decomposer (the prompt starts with `DECOMPOSE_PROMPT`): one presence requirement per "and"-separated part, one generate command.
    * critic (anything else): a verdict for every requirement id `- rN: ...` in the prompt, unsatisfied when the requirement
      text contains a word of `unmet`.
    `status` (an HTTP code) or `redirect` (a URL) replace every answer. Requests are recorded (path, Authorization, body).
    """

    def __init__(self, judge=None, default_judge=(0.9, 0.05), unmet=(), status=None, redirect=None):
        self.judge, self.default_judge, self.unmet = dict(judge or {}), default_judge, tuple(unmet)
        self.status, self.redirect, self.requests = status, redirect, []
        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/v1"

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()

    def answer(self, body: dict) -> dict:
        text = _text_of(body["messages"])
        if body.get("logprobs"):
            return self._judge(text)
        if text.startswith(DECOMPOSE_PROMPT):
            return _completion(self._decomposition(text[len(DECOMPOSE_PROMPT) :]))
        return _completion(self._feedback(text))

    def _judge(self, question: str) -> dict:
        py_pn = next((v for k, v in self.judge.items() if k in question), self.default_judge)
        if py_pn is None:
            return _completion("No")
        py, pn = py_pn
        top = [("Yes", py), ("No", pn), (" yes", 1e-4), ("The", max(1e-6, 1 - py - pn)), ("I", 1e-6)]
        said = "Yes" if py >= pn else "No"
        lp = {
            "content": [
                {
                    "token": said,
                    "logprob": math.log(dict(top)[said]),
                    "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top],
                }
            ]
        }
        return _completion(said, lp)

    def _decomposition(self, prompt: str) -> str:
        parts = [p.strip(" .") for p in re.split(r"\band\b|,", prompt) if p.strip(" .")]
        return json.dumps(
            {"requirements": [{"kind": "presence", "text": p} for p in parts], "commands": [{"kind": "generate", "text": prompt}]}
        )

    def _feedback(self, prompt: str) -> str:
        reqs = re.findall(r"^- (r\d+): (.*)$", prompt, re.M)
        verdicts = [
            {"id": rid, "satisfied": not any(w in text for w in self.unmet), "score": 0.9, "reason": "stand-in"} for rid, text in reqs
        ]
        return json.dumps(
            {"verdicts": verdicts, "fidelity": 0.95, "aesthetics": 0.8, "issues": [], "suggestions": ["move the circle left"]}
        )

    def _handler(self):
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                srv.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if srv.redirect:
                    self.send_response(302)
                    self.send_header("Location", srv.redirect)
                    self.end_headers()
                    return
                if srv.status:
                    self.send_response(srv.status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "stand-in failure"}')
                    return
                payload = json.dumps(srv.answer(body)).encode() if self.path == "/v1/chat/completions" else b"{}"
                self.send_response(200 if self.path == "/v1/chat/completions" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return H


def _completion(content: str, logprobs: dict | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "stand-in", "object": "chat.completion", "choices": [choice]}


@pytest.fixture
def stand_in():
    made = []

    def start(**kw) -> StandIn:
        s = StandIn(**kw)
        made.append(s)
        return s

    yield start
    for s in made:
        s.close()


@pytest.fixture(scope="module")
def record_and_picture():
    "The GenEval fixture's 'a photo of a circle left of a square', its checklist, and a clean picture of it."
    from image_poser.shapes.parse import parse
    from image_poser.shapes.scene import render_spec

    rec = next(r for r in load_prompts(f"geneval:{GENEVAL}") if r["prompt"] == "a photo of a circle left of a square")
    img, _ = render_spec(parse(rec["prompt"]).spec, seed=0)
    return rec, record_task(rec), img


def _p(py: float, pn: float) -> float:
    "The P(yes) the judge must read from the stand-in's answer: every spelling of yes summed (' yes' at 1e-4), renormalised over yes + no."
    return (py + 1e-4) / (py + 1e-4 + pn)


def _in_unit(ev) -> bool:
    return all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in ev.scores().values()) and all(0.0 <= v.score <= 1.0 for v in ev.verdicts)


# ---------------------------------------------------------------- the three roles through the builders


def test_critic_decomposer_evaluator_over_http(stand_in, record_and_picture):
    rec, task, img = record_and_picture
    s = stand_in(judge={"left of": (0.3, 0.6), "artifacts": (0.8, 0.1), "aesthetically": (0.6, 0.3)}, unmet=("left of",))
    critic = build_critic(f"http:{s.url}#stand-in-critic")
    decomposer = build_decomposer(f"llm:http:{s.url}#stand-in-lm")
    evaluator = build_evaluator(f"vqa:http:{s.url}#stand-in-judge")
    assert isinstance(critic, Critic) and isinstance(decomposer, Decomposer) and isinstance(evaluator, Evaluator)

    fb = critic.critique(img, task)
    assert fb.parse_status == "ok", fb.issues
    assert [(v.requirement, v.satisfied) for v in fb.verdicts] == [("r0", True), ("r1", True), ("r2", False)]
    assert fb.alignment == pytest.approx(2 / 3) and [c.text for c in fb.suggestions] == ["move the circle left"]

    t = decomposer.decompose("a red circle and a blue square")
    assert t.meta["decomposer"] == "http:stand-in-lm" and "fallback" not in t.meta
    assert [q.text for q in t.requirements] == ["a red circle", "a blue square"]

    ev = evaluator.evaluate(img, task)
    assert _in_unit(ev)
    assert [v.requirement for v in ev.verdicts] == ["r0", "r1", "r2"]
    p_yes = _p(0.9, 0.05)  # the default for "there is a square" / "there is a circle"
    assert [v.score for v in ev.verdicts] == pytest.approx([p_yes, p_yes, _p(0.3, 0.6)])
    assert [v.satisfied for v in ev.verdicts] == [True, True, False]
    assert ev.alignment == pytest.approx(2 / 3) and ev.full_success == 0.0
    assert ev.fidelity == pytest.approx(_p(0.8, 0.1)) and ev.aesthetics == pytest.approx(_p(0.6, 0.3))
    assert ev.issues == []

    judge_calls = [r for r in s.requests if r["body"].get("logprobs")]
    assert len(judge_calls) == 5 and all(r["path"] == "/v1/chat/completions" for r in s.requests)
    body = judge_calls[2]["body"]
    assert (body["model"], body["top_logprobs"], body["temperature"]) == ("stand-in-judge", 5, 0.0)
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert _text_of(body["messages"]) == "Is it true that the circle is left of the square? Answer yes or no."


def test_full_success_when_everything_holds(stand_in, record_and_picture):
    _, task, img = record_and_picture
    s = stand_in(default_judge=(0.7, 0.2))
    ev = build_evaluator(f"vqa:http:{s.url}#j").evaluate(img, task)
    want = {"alignment": 1.0, "full_success": 1.0, "all_met": 1.0, "fidelity": _p(0.7, 0.2), "aesthetics": _p(0.7, 0.2)}
    assert ev.scores() == pytest.approx(want)


def test_dpg_parents_over_http(stand_in):
    "DPG-Bench's rule over HTTP: a question whose parent is answered no is unsatisfied and never sent."
    from PIL import Image

    rec = load_prompts(f"dpg:{ROOT / 'tests/fixtures/benchmarks/dpg/dpg_bench.csv'}")[0]
    s = stand_in(judge={"Is there a circle?": (0.1, 0.85)})
    ev = build_evaluator(f"vqa:http:{s.url}#j").evaluate(Image.new("RGB", (64, 64), "white"), record_task(rec))
    sat = {v.requirement: v.satisfied for v in ev.verdicts}
    assert sat == {"r1": False, "r2": True, "r3": False, "r4": False, "r5": True, "r6": True, "r7": False, "r8": True}
    asked = [_text_of(r["body"]["messages"]) for r in s.requests]
    assert not any("Is the circle red?" in q or "Is the circle large?" in q or "left of the squares" in q for q in asked)
    assert len(asked) == 5 + 2  # r1, r2, r5, r6, r8 + fidelity + aesthetics
    assert ev.alignment == pytest.approx(4 / 8) and _in_unit(ev)


def test_judge_without_logprobs_reads_the_words(stand_in, record_and_picture):
    _, task, img = record_and_picture
    s = stand_in(judge={"circle": None})  # "No" without logprobs
    ev = build_evaluator(f"vqa:http:{s.url}#j").evaluate(img, task)
    assert [v.score for v in ev.verdicts] == pytest.approx([_p(0.9, 0.05), 0.0, 0.0])
    assert "(text)" in ev.verdicts[1].reason and "(logprobs)" in ev.verdicts[0].reason


def test_server_failures_are_recorded_not_raised(stand_in, record_and_picture):
    rec, task, img = record_and_picture
    down = stand_in(status=503)
    ev = http_vqa_evaluator(down.url, "j", max_retries=1, backoff_s=0.0).evaluate(img, task)
    assert ev.scores() == {"alignment": 0.0, "full_success": 0.0, "all_met": 0.0, "fidelity": 1.0, "aesthetics": 1.0}
    assert all(v.reason.startswith("judge error: judge unavailable: ChatError: gave up after 2 attempts: HTTP 503") for v in ev.verdicts)
    assert len(down.requests) == 5 * 2 and len(ev.issues) == 5
    bad = stand_in(status=400)
    ev = build_evaluator(f"vqa:http:{bad.url}#j").evaluate(img, task)  # not retried
    assert len(bad.requests) == 5 and _in_unit(ev)
    fb = build_critic(f"http:{bad.url}#c").critique(img, task)
    assert fb.parse_status == "failed" and "critic unavailable" in fb.issues[0]
    t = build_decomposer(f"llm:http:{bad.url}#d").decompose(rec["prompt"])
    assert t.meta["fallback"].startswith("model unavailable") and t.requirements


def test_keys_go_only_where_the_stack_says(stand_in, record_and_picture, monkeypatch):
    _, task, img = record_and_picture
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-travel")
    monkeypatch.setenv("STAND_IN_KEY", "sk-stand-in-123")
    s = stand_in()
    build_evaluator(f"vqa:http:{s.url}#j").evaluate(img, task)
    build_critic(f"http:{s.url}#c").critique(img, task)
    assert {r["auth"] for r in s.requests} == {None}  # no api_key_env: no key, not even OPENAI_API_KEY
    s.requests.clear()
    build_evaluator(f"vqa:http:{s.url}#j", api_key_env="STAND_IN_KEY").evaluate(img, task)
    assert {r["auth"] for r in s.requests} == {"Bearer sk-stand-in-123"}


def test_judge_refuses_redirects(stand_in, record_and_picture, monkeypatch):
    _, task, img = record_and_picture
    monkeypatch.setenv("STAND_IN_KEY", "sk-stand-in-123")
    elsewhere = stand_in()
    hop = stand_in(redirect=elsewhere.url + "/chat/completions")
    ev = build_evaluator(f"vqa:http:{hop.url}#j", api_key_env="STAND_IN_KEY").evaluate(img, task)
    assert elsewhere.requests == []  # neither the request nor the key went to the other host
    assert "HTTP 302 redirect" in ev.verdicts[0].reason and "refused" in ev.verdicts[0].reason
    assert "sk-stand-in-123" not in json.dumps([v.reason for v in ev.verdicts] + ev.issues)


# ---------------------------------------------------------------- stacks


def test_every_shipped_stack_validates_and_builds_without_loading_models():
    assert {"shapes", "gpu-sdxl-qwen"} <= set(available_stacks())
    for name in available_stacks():
        cfg = load_stack(name)
        st = build_stack(cfg.model_copy(update={"prompts": f"geneval:{GENEVAL}"}), n=2)
        assert isinstance(st.registry, Registry) and len(st.registry) > 0
        assert isinstance(st.critic, Critic) and isinstance(st.decomposer, Decomposer) and isinstance(st.evaluator, Evaluator)
        assert len(st.records) == 2
    gpu = load_stack("gpu-sdxl-qwen")
    assert gpu.critic.split(":", 1)[1] != gpu.evaluator.split(":", 2)[2]  # the evaluator is not the critic's model


def test_stack_over_http_runs_an_episode(stand_in, record_and_picture):
    "The environment with the stack's HTTP critic and decomposer on a GenEval record; the HTTP evaluator scores the result."
    from image_poser.env import EnvConfig, ImagePoserEnv

    rec, _, _ = record_and_picture
    s = stand_in(unmet=("left",))
    cfg = stack_config(
        {
            "critic": f"http:{s.url}#c",
            "decomposer": f"llm:http:{s.url}#d",
            "evaluator": f"vqa:http:{s.url}#j",
            "prompts": f"geneval:{GENEVAL}",
        }
    )
    st = build_stack(cfg, n=3)
    assert [r["id"] for r in st.records] == ["geneval-00000", "geneval-00002", "geneval-00003"]  # the shapes world draws these
    env = ImagePoserEnv(EnvConfig(horizon=2), registry=st.registry, critic=st.critic, decomposer=st.decomposer, records=st.records)
    obs, info = env.reset(seed=0, options={"record": rec})
    assert env.task.meta["decomposer"] == "http:d"
    done = False
    while not done:
        obs, r, term, trunc, info = env.step(int(info["action_mask"][:-1].argmax()))
        done = term or trunc
    assert env.image is not None and info["feedback"].source == "http:c"
    ev = st.evaluator.evaluate(env.image, env.task)
    assert _in_unit(ev) and len(ev.verdicts) == len(env.task.requirements)


def test_importing_the_stack_pulls_in_no_evaluator():
    "Training code may import image_poser.stack and image_poser.benchmarks: neither may import an Evaluator."
    loaded = modules_after_import("image_poser.stack", "image_poser.benchmarks")
    assert not {"image_poser.evaluator", "image_poser.shapes.evaluator", "image_poser.backends.vqa"} & loaded, sorted(loaded)
