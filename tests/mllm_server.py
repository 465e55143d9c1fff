"""The fake MLLM grader server the tests start on 127.0.0.1, and what they share around it.

The server (``http.server``) replies as each test scripts it (:class:`Reply`) and records every
request so that a test can check what was sent. Its fixture, ``server``, is in ``conftest.py``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch
from PIL import Image

from dsharp.rewards.base import RewardImages
from dsharp.rewards.mllm_rubric import ASPECT_KEYS

KEY = "sk-dsharp-TEST-9f8e7d6c5b4a-never-log-me"
ASPECT_NAMES = (
    "accuracy to the prompt",
    "creativity and originality",
    "visual quality and realism",
    "consistency and cohesion",
    "emotional or thematic resonance",
)
OVERALL = {"a red cube": 8.0, "a blue ball": 3.5, "a green cone": 6.0}


@dataclass
class Reply:
    """One scripted HTTP reply: status, a chat message text or a raw JSON body, a delay."""

    status: int = 200
    content: str | None = None
    body: Any = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    html: str | None = None  # a web page instead of JSON (a base_url that is no API)
    trickle_s: float = 0.0  # send the body in 10 pieces, this long apart (a slow proxy)


def grade_json(overall: float, aspect: float = 7.0) -> str:
    doc: dict[str, Any] = {k: {"reason": f"{k} looks fine", "score": aspect} for k in ASPECT_KEYS}
    doc["overall"] = overall
    return json.dumps(doc)


def prompt_of(body: dict[str, Any]) -> str:
    text = body["messages"][-1]["content"][0]["text"]
    return json.loads(re.search(r"^PROMPT: (.*)$", text, re.M).group(1))


def good(body: dict[str, Any], n: int) -> Reply:
    return Reply(content=grade_json(OVERALL[prompt_of(body)]))


class GraderServer:
    """A loopback chat-completions server whose replies come from ``self.responder``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.responder: Callable[[dict[str, Any], int], Reply] = good
        self.release = threading.Event()  # set at teardown: slow replies stop waiting
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                    )
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    reply = server.responder(body, n)
                    if reply.delay_s:
                        server.release.wait(reply.delay_s)
                    self._send(reply, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, reply: Reply, body: dict[str, Any]) -> None:
                if reply.content is not None:
                    payload: Any = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply.content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 100,
                            "completion_tokens": 20,
                            "total_tokens": 120,
                        },
                    }
                else:
                    payload = reply.body if reply.body is not None else {"error": {"message": "x"}}
                data = json.dumps(payload).encode()
                kind = "application/json"
                if reply.html is not None:
                    data, kind = reply.html.encode(), "text/html"
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if not reply.trickle_s:
                    self.wfile.write(data)
                    return
                piece = len(data) // 10 + 1
                for start in range(0, len(data), piece):
                    self.wfile.write(data[start : start + piece])
                    self.wfile.flush()
                    server.release.wait(reply.trickle_s)

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def images(n: int, size: int = 16) -> RewardImages:
    pil = [Image.new("RGB", (size, size), (40 * i, 200 - 30 * i, 90)) for i in range(n)]
    return RewardImages.from_pil(pil)


def score(reward, batch: RewardImages, prompts: list[str]) -> tuple[torch.Tensor, dict]:
    return reward(batch, prompts, [{} for _ in prompts])
