"""The OpenAI-compatible client, critic and decomposer against a real HTTP server on 127.0.0.1 that scripts faults.

Each fault of the client's table (notebook 20_backends_llm) has a test here: redirects to another origin, unusable
Retry-After values, replies of the wrong shape, short bodies, bad status lines, resets, trickles, huge replies, a server
that rejects response_format, and the API key in repr, logs and error texts.
"""

import email.utils
import json
import logging
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from image_poser.backends.llm import ChatError, OpenAIChat, feedback_response_format, user_message
from image_poser.critic import http_critic
from image_poser.decompose import http_decomposer
from image_poser.shapes.decompose import task_from_prompt


def reply(text):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


class Script:
    "What the server does for each successive request; the last action repeats."

    def __init__(self, *actions):
        self.actions, self.requests, self.lock, self.sent = list(actions), [], threading.Lock(), 0

    def next(self):
        with self.lock:
            return self.actions.pop(0) if len(self.actions) > 1 else self.actions[0]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # resets and broken pipes are what these tests provoke
        pass


def _handler(script):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a):  # keep test output clean
            pass

        def do_GET(self):  # urllib's default redirect handling turns a POST into a GET: record it, answer as a model would
            script.requests.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization"), "body": None})
            self.send_body(200, reply("stolen"))

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw) if raw else None
            script.requests.append({"method": "POST", "path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            kind, *arg = script.next()
            getattr(self, f"act_{kind}")(body, *arg)

        def send_body(self, code, payload, headers=()):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def act_ok(self, body, text):
            self.send_body(200, reply(text))

        def act_slow(self, body, seconds):
            time.sleep(seconds)
            self.send_body(200, reply("late"))

        def act_body(self, body, payload):
            self.send_body(200, payload)

        def act_status(self, body, code, headers=(), payload=b'{"error": "nope"}'):
            self.send_body(code, payload, headers)

        def act_echo_auth(self, body, code):  # a debug server that repeats the request's headers in its error page
            self.send_body(code, f"bad request; you sent Authorization: {self.headers.get('Authorization')}".encode())

        def act_redirect(self, body, code, location):
            self.send_body(code, b"", [("Location", location)])

        def act_raw(self, body, data):  # bytes straight onto the socket, then close
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = True

        def act_reset(self, body):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

        def act_trickle(self, body, interval, headers_first):
            data = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + reply("x" * 400)
            if headers_first:
                head, _, data = data.partition(b"\r\n\r\n")
                self.wfile.write(head + b"\r\n\r\n")
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(interval)
            except OSError:
                pass

        def act_huge(self, body, nbytes, declare):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if declare:
                self.send_header("Content-Length", str(nbytes))
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                while script.sent < nbytes:
                    self.wfile.write(chunk)
                    script.sent += len(chunk)
            except OSError:
                pass

        def act_strict_format(self, body, text):  # a server without structured output (e.g. an old llama.cpp)
            if "response_format" in body:
                self.send_body(400, b'{"error": {"message": "response_format of type json_schema is not supported"}}')
            else:
                self.send_body(200, reply(text))

    return H


@pytest.fixture
def server():
    started = []

    def start(*actions):
        script = Script(*actions)
        srv = Server(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", script

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def client(url, **kw):
    return OpenAIChat(**({"base_url": url, "model": "test", "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 2} | kw))


HI = [user_message("hi")]


def test_retries_429_and_500_then_succeeds(server):
    url, script = server(("status", 429, [("Retry-After", "0")]), ("status", 500), ("ok", "hello"))
    c = client(url)
    assert c.chat(HI) == "hello"
    assert c.attempts == 3 and len(script.requests) == 3
    assert script.requests[0]["path"] == "/v1/chat/completions" and script.requests[0]["body"]["model"] == "test"


def test_timeout_then_retry(server):
    url, _ = server(("slow", 1.5), ("ok", "fast"))
    c = client(url, timeout_s=0.3, max_retries=2)
    assert c.chat(HI) == "fast"


def test_invalid_body_and_empty_choices_are_retried_then_reported(server):
    url, _ = server(("body", b"<html>502 Bad Gateway</html>"), ("body", b'{"choices": []}'), ("ok", "fine"))
    assert client(url).chat(HI) == "fine"
    url, _ = server(("body", b'{"choices": []}'))
    with pytest.raises(ChatError, match="no choices"):
        client(url, max_retries=2).chat(HI)


def test_client_errors_are_not_retried(server):
    url, script = server(("status", 401))
    c = client(url)
    with pytest.raises(ChatError, match="HTTP 401"):
        c.chat(HI)
    assert len(script.requests) == 1


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_is_refused_and_the_key_stays_home(server, monkeypatch, code):
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-redirect-secret")
    other, other_script = server(("ok", "stolen"))
    url, script = server(("redirect", code, other + "/chat/completions"))
    with pytest.raises(ChatError, match="refused a redirect") as e:
        client(url, api_key_env="IP_TEST_API_KEY").chat(HI)
    assert other_script.requests == []  # the other host never heard from us
    assert script.requests[0]["auth"] == "Bearer sk-redirect-secret" and "sk-redirect" not in str(e.value)


@pytest.mark.parametrize("code", [302, 307, 308])
def test_redirect_within_the_origin_is_followed_as_the_same_post(server, monkeypatch, code):
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-same-origin")
    url, script = server(("redirect", code, "/v2/chat/completions"), ("ok", "moved"))
    assert client(url, api_key_env="IP_TEST_API_KEY").chat(HI) == "moved"
    second = script.requests[1]
    assert second["method"] == "POST" and second["path"] == "/v2/chat/completions"
    assert second["body"]["messages"][0]["content"] == "hi" and second["auth"] == "Bearer sk-same-origin"


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "soon", ""])
def test_unusable_retry_after_falls_back_to_backoff(server, value):
    url, script = server(("status", 503, [("Retry-After", value)]), ("ok", "after"))
    t0 = time.monotonic()
    assert client(url).chat(HI) == "after"
    assert time.monotonic() - t0 < 1.0 and len(script.requests) == 2


def test_retry_after_as_an_http_date_is_honoured(server):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1 s resolution: a wait of 1 to 2 s
    url, _ = server(("status", 503, [("Retry-After", when)]), ("ok", "later"))
    t0 = time.monotonic()
    assert client(url, max_backoff_s=5).chat(HI) == "later"
    assert 0.9 <= time.monotonic() - t0 < 3.5


def test_deadline_includes_the_waits(server):
    url, script = server(("status", 503, [("Retry-After", "30")]))
    t0 = time.monotonic()
    with pytest.raises(ChatError, match="deadline of 1 s reached"):
        client(url, max_backoff_s=60, max_retries=50, deadline_s=1).chat(HI)
    assert time.monotonic() - t0 < 2.0 and len(script.requests) == 1


# ---------------------------------------------------------------- replies of the wrong shape


BAD_REPLIES = [
    (b'{"choices": "abc"}', "not a list"),
    (b'{"choices": []}', "no choices"),
    (b'{"choices": [1]}', "no 'message'"),
    (b'{"choices": [{}]}', "no 'message'"),
    (b'{"choices": [{"message": "x"}]}', "no 'message'"),
    (b'{"choices": [{"message": {"role": "assistant"}}]}', "no text content"),
    (b'{"choices": [{"message": {"content": 7}}]}', "no text content"),
    (b'{"error": {"message": "model overloaded"}}', "model overloaded"),
    (b'["choices"]', "not an object"),
    (b"{'choices': oops", "not JSON"),
    ("{\"choices\": \"caf\u00e9\"}".encode("latin-1"), "not UTF-8"),
]


@pytest.mark.parametrize("raw,why", BAD_REPLIES, ids=[w for _, w in BAD_REPLIES])
def test_bad_reply_is_retried_then_reported(server, raw, why):
    url, script = server(("body", raw), ("ok", "good"))
    c = client(url)
    assert c.chat(HI) == "good" and c.attempts == 2
    url, _ = server(("body", raw))
    with pytest.raises(ChatError, match="gave up after 2 attempts") as e:
        client(url, max_retries=1).chat(HI)
    assert why in str(e.value)


RAW_FAULTS = {
    "short body (IncompleteRead)": ("raw", b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"choi'),
    "bad status line": ("raw", b"HELLO THERE\r\n\r\n"),
    "no reply at all": ("raw", b""),
    "connection reset": ("reset",),
}


@pytest.mark.parametrize("fault", list(RAW_FAULTS))
def test_broken_connections_are_retried_then_reported(server, fault):
    url, script = server(RAW_FAULTS[fault], ("ok", "recovered"))
    assert client(url).chat(HI) == "recovered" and len(script.requests) == 2
    url, _ = server(RAW_FAULTS[fault])
    with pytest.raises(ChatError, match="gave up after 3 attempts: connection to"):
        client(url, max_retries=2).chat(HI)


# ---------------------------------------------------------------- deadline and size cap


@pytest.mark.parametrize("headers_first", [False, True], ids=["trickled-headers", "trickled-body"])
def test_a_trickling_server_cannot_outlive_the_deadline(server, headers_first):
    url, _ = server(("trickle", 0.5, headers_first))  # every read arrives within timeout_s, so only a deadline stops it
    t0 = time.monotonic()
    with pytest.raises(ChatError, match="deadline"):
        client(url, timeout_s=1, deadline_s=2, max_retries=3).chat(HI)
    assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("declare", [False, True], ids=["streamed", "declared"])
def test_a_huge_reply_is_refused_at_the_cap(server, declare):
    url, script = server(("huge", 150 << 20, declare))
    with pytest.raises(ChatError, match="larger than max_reply_bytes=1048576"):
        client(url, max_reply_bytes=1 << 20).chat(HI)
    assert script.sent < 40 << 20, script.sent  # stopped reading long before 150 MB


# ---------------------------------------------------------------- structured output


def test_response_format_carries_the_feedback_schema(server):
    url, script = server(("ok", "{}"))
    c = client(url, response_format=feedback_response_format())
    c.chat(HI)
    c.chat(HI, response_format={"type": "json_object"})  # a per-call format wins
    rf = script.requests[0]["body"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["required"] == ["verdicts"]
    assert script.requests[1]["body"]["response_format"] == {"type": "json_object"}
    plain_url, plain = server(("ok", "{}"))
    client(plain_url).chat(HI)
    assert "response_format" not in plain.requests[0]["body"]


def test_a_server_rejecting_response_format_is_asked_without_once_and_remembered(server):
    url, script = server(("strict_format", "plain"))
    c = client(url, response_format=feedback_response_format())
    assert c.chat(HI) == "plain" and c.format_rejected
    assert c.chat(HI) == "plain"
    assert ["response_format" in r["body"] for r in script.requests] == [True, False, False]


def test_other_400s_are_not_mistaken_for_a_format_rejection(server):
    url, script = server(("status", 400, (), b'{"error": {"message": "context length exceeded"}}'))
    c = client(url, response_format=feedback_response_format())
    with pytest.raises(ChatError, match="HTTP 400 .*context length exceeded"):
        c.chat(HI)
    assert len(script.requests) == 1 and not c.format_rejected


# ---------------------------------------------------------------- the API key


def test_api_key_is_sent_but_never_logged(server, monkeypatch, caplog):
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-very-secret-987")
    url, script = server(("status", 500))
    c = client(url, api_key_env="IP_TEST_API_KEY", max_retries=1)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ChatError) as e:
            c.chat(HI)
    assert script.requests[0]["auth"] == "Bearer sk-very-secret-987"
    assert "sk-very-secret" not in str(e.value) and "sk-very-secret" not in repr(c) and "sk-very-secret" not in caplog.text
    assert "sk-very-secret" not in str(vars(c))  # not stored either: read from the environment at each call


def test_api_key_echoed_by_the_server_is_scrubbed(server, monkeypatch, caplog):
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-echoed-555")
    url, _ = server(("echo_auth", 400))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ChatError, match="HTTP 400") as e:
            client(url, api_key_env="IP_TEST_API_KEY").chat(HI)
    assert "you sent Authorization" in str(e.value) and "sk-echoed" not in str(e.value) and "sk-echoed" not in caplog.text


def test_api_key_is_read_at_call_time(server, monkeypatch):
    url, script = server(("ok", "x"))
    c = client(url, api_key_env="IP_TEST_API_KEY")
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-first")
    c.chat(HI)
    monkeypatch.setenv("IP_TEST_API_KEY", "sk-second")
    c.chat(HI)
    monkeypatch.delenv("IP_TEST_API_KEY")
    c.chat(HI)
    assert [r["auth"] for r in script.requests] == ["Bearer sk-first", "Bearer sk-second", None]


def test_image_travels_as_a_data_url(server):
    url, script = server(("ok", "x"))
    client(url).chat([user_message("look", [Image.new("RGB", (8, 8), "red")])])
    part = script.requests[0]["body"]["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


# ---------------------------------------------------------------- critic and decomposer over HTTP


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
    reply_text = json.dumps(
        {
            "requirements": [{"kind": "count", "text": "two red circles"}],
            "commands": [{"kind": "generate", "text": "two red circles"}, {"kind": "edit", "text": "make them blue"}],
        }
    )
    url, _ = server(("ok", reply_text))
    t = http_decomposer(url, "test", backoff_s=0.01).decompose("two red circles, then make them blue")
    assert [c.kind for c in t.commands] == ["generate", "edit"] and "fallback" not in t.meta
    url, _ = server(("status", 500))
    t = http_decomposer(url, "test", backoff_s=0.01, max_retries=1).decompose("two red circles, then make them blue")
    assert "model unavailable" in t.meta["fallback"] and [c.kind for c in t.commands] == ["generate", "edit"]
