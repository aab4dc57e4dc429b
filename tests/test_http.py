"""The OpenAI-compatible client, critic and decomposer against a real HTTP server on 127.0.0.1 that scripts faults."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from image_poser.backends.llm import ChatError, OpenAIChat, user_message
from image_poser.critic import http_critic
from image_poser.decompose import http_decomposer
from image_poser.shapes.decompose import task_from_prompt


class Script:
    "What the server does for each successive request; the last action repeats."

    def __init__(self, *actions):
        self.actions, self.requests, self.lock = list(actions), [], threading.Lock()

    def next(self):
        with self.lock:
            return self.actions.pop(0) if len(self.actions) > 1 else self.actions[0]


def _handler(script):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep test output clean
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            script.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
            kind, *arg = script.next()
            if kind == "slow":
                time.sleep(arg[0])
                kind, arg = "ok", ["late"]
            if kind == "status":
                self.send_response(arg[0])
                if arg[0] == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(b'{"error": "nope"}')
                return
            payload = {
                "ok": lambda: json.dumps({"choices": [{"message": {"role": "assistant", "content": arg[0]}}]}).encode(),
                "badjson": lambda: b"<html>502 Bad Gateway</html>",
                "empty": lambda: json.dumps({"choices": []}).encode(),
            }[kind]()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except BrokenPipeError:
                pass

    return H


@pytest.fixture
def server():
    started = []

    def start(*actions):
        script = Script(*actions)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", script

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def client(url, **kw):
    return OpenAIChat(**({"base_url": url, "model": "test", "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2} | kw))


def test_retries_429_and_500_then_succeeds(server):
    url, script = server(("status", 429), ("status", 500), ("ok", "hello"))
    c = client(url)
    assert c.chat([user_message("hi")]) == "hello"
    assert c.attempts == 3 and len(script.requests) == 3
    assert script.requests[0]["path"] == "/v1/chat/completions" and script.requests[0]["body"]["model"] == "test"


def test_timeout_then_retry(server):
    url, _ = server(("slow", 1.5), ("ok", "fast"))
    c = client(url, timeout_s=0.3, max_retries=2)
    assert c.chat([user_message("hi")]) == "fast"


def test_invalid_body_and_empty_choices_are_retried_then_reported(server):
    url, _ = server(("badjson",), ("empty",), ("ok", "fine"))
    assert client(url).chat([user_message("hi")]) == "fine"
    url, _ = server(("empty",))
    with pytest.raises(ChatError, match="no choices"):
        client(url, max_retries=2).chat([user_message("hi")])


def test_client_errors_are_not_retried(server):
    url, script = server(("status", 401))
    c = client(url)
    with pytest.raises(ChatError, match="HTTP 401"):
        c.chat([user_message("hi")])
    assert len(script.requests) == 1


def test_api_key_is_sent_but_never_logged(server, monkeypatch, caplog):
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-very-secret-987")
    url, script = server(("status", 500))
    c = client(url, api_key_env="IP_TEST_API_KEY", max_retries=1)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ChatError) as e:
            c.chat([user_message("hi")])
    assert script.requests[0]["auth"] == "Bearer sk-very-secret-987"
    assert "sk-very-secret" not in str(e.value) and "sk-very-secret" not in repr(c) and "sk-very-secret" not in caplog.text


def test_image_travels_as_a_data_url(server):
    url, script = server(("ok", "x"))
    client(url).chat([user_message("look", [Image.new("RGB", (8, 8), "red")])])
    part = script.requests[0]["body"]["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


TASK = task_from_prompt("two red circles left of a blue square on a black background")
GOOD = json.dumps({"verdicts": [{"id": q.id, "satisfied": True, "score": 1.0, "reason": "ok"} for q in TASK.requirements]})


def test_http_critic_reads_feedback_and_repairs_once(server):
    url, script = server(("ok", "It looks nice!"), ("ok", GOOD))
    fb = http_critic(url, "test", backoff_s=0.01).critique(Image.new("RGB", (64, 64)), TASK)
    assert fb.parse_status == "ok" and fb.alignment == 1.0 and len(script.requests) == 2


def test_http_critic_survives_a_dead_server(server):
    url, _ = server(("status", 503))
    fb = http_critic(url, "test", backoff_s=0.01, max_retries=1).critique(Image.new("RGB", (64, 64)), TASK)
    assert fb.parse_status == "failed" and "critic unavailable" in fb.issues[0]


def test_http_decomposer_and_its_fallback(server):
    reply = json.dumps(
        {
            "requirements": [{"kind": "count", "text": "two red circles"}],
            "commands": [{"kind": "generate", "text": "two red circles"}, {"kind": "edit", "text": "make them blue"}],
        }
    )
    url, _ = server(("ok", reply))
    t = http_decomposer(url, "test", backoff_s=0.01).decompose("two red circles, then make them blue")
    assert [c.kind for c in t.commands] == ["generate", "edit"] and "fallback" not in t.meta
    url, _ = server(("status", 500))
    t = http_decomposer(url, "test", backoff_s=0.01, max_retries=1).decompose("two red circles, then make them blue")
    assert "model unavailable" in t.meta["fallback"] and [c.kind for c in t.commands] == ["generate", "edit"]
