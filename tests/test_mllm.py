"""The MLLM grader against a real chat-completions server on 127.0.0.1 that the tests start.

The server (``tests/mllm_server.py``, fixture ``server`` in ``conftest.py``) replies as
scripted per test: a good grade, fenced JSON, prose without JSON, 429 then success, a
persistent 500, a reply slower than the timeout, a server that rejects ``json_schema``. It
records every request so the tests can check what was sent.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dsharp.config import RewardSpec
from dsharp.rewards import plugins
from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.json_extract import iter_json_objects
from dsharp.rewards.mllm import build_mllm_reward
from dsharp.rewards.mllm_cache import GradeCache, default_cache_path
from dsharp.rewards.mllm_rubric import (
    ASPECT_KEYS,
    TEMPLATE_VERSION,
    GradeParseError,
    parse_grade,
)
from mllm_server import (
    ASPECT_NAMES,
    KEY,
    OVERALL,
    GraderServer,
    Reply,
    good,
    grade_json,
    images,
    prompt_of,
    score,
)

pytestmark = pytest.mark.usefixtures("mllm_env")


def grader(server: GraderServer, tmp_path: Path, **options: Any):
    defaults = {
        "model": "test-vlm",
        "base_url": server.url,
        "backoff_s": 0.01,
        "max_retries": 2,
        "timeout_s": 5.0,
        "cache_path": str(tmp_path / "grades.sqlite"),
    }
    return build_mllm_reward(**{**defaults, **options})


# --------------------------------------------------------------------------- replies


def test_good_reply_scores_and_the_request_carries_image_prompt_aspects_and_key(
    server: GraderServer, tmp_path: Path
) -> None:
    batch = images(2)
    scores, info = score(grader(server, tmp_path), batch, ["a red cube", "a blue ball"])
    assert scores.dtype == torch.float32 and scores.shape == (2,)
    assert scores.tolist() == pytest.approx([0.8, 0.35])
    assert info["overall"] == [8.0, 3.5]
    assert info["aspects"] == {k: [7.0, 7.0] for k in ASPECT_KEYS}
    assert info["reasons"][0]["accuracy"] == "accuracy looks fine"
    assert info["prompt_tokens"] == 200 and info["completion_tokens"] == 40
    assert info["requests"] == 2 and info["cached"] == 0 and info["missing"] == 0
    assert info["template"] == TEMPLATE_VERSION and info["structured_output"] == "json_schema"
    json.dumps(info, allow_nan=False)

    assert len(server.requests) == 2
    by_prompt = {prompt_of(r["body"]): r for r in server.requests}
    for i, prompt in enumerate(["a red cube", "a blue ball"]):
        request = by_prompt[prompt]
        assert request["path"] == "/v1/chat/completions"
        assert request["auth"] == f"Bearer {KEY}"
        body = request["body"]
        assert body["model"] == "test-vlm" and body["temperature"] == 0
        assert body["response_format"]["type"] == "json_schema"
        text = json.dumps(body["messages"])
        assert all(name in text for name in ASPECT_NAMES)
        image_part = body["messages"][-1]["content"][1]
        url = image_part["image_url"]["url"]
        assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert sent.format == "PNG" and sent.tobytes() == batch.pil[i].tobytes()


def test_fenced_json_inside_prose_is_extracted(server: GraderServer, tmp_path: Path) -> None:
    def fenced(body: dict[str, Any], n: int) -> Reply:
        grade = grade_json(OVERALL[prompt_of(body)])
        return Reply(content=f"Sure! Here is my grade:\n```json\n{grade}\n```\nHope it helps.")

    server.responder = fenced
    reward = grader(server, tmp_path, structured_output="none", image_format="jpeg")
    scores, info = score(reward, images(1), ["a green cone"])
    assert scores.tolist() == pytest.approx([0.6])
    body = server.requests[0]["body"]
    assert "response_format" not in body
    assert body["messages"][-1]["content"][1]["image_url"]["url"].startswith(
        "data:image/jpeg;base64,"
    )


def test_prose_without_json_fails_loudly_after_retries(
    server: GraderServer, tmp_path: Path
) -> None:
    server.responder = lambda body, n: Reply(content="The image is lovely, I would say 8/10.")
    reward = grader(server, tmp_path, max_retries=2)
    with pytest.raises(RewardError) as error:
        score(reward, images(1), ["a red cube"])
    message = str(error.value)
    assert "\n" not in message
    assert "could not score 1 of 1 images" in message
    assert "unusable reply: the reply has no JSON object" in message
    assert "'The image is lovely" in message and "after 3 attempts" in message
    assert len(server.requests) == 3  # one try and max_retries retries, then no invented score


def test_a_web_page_instead_of_json_is_an_unusable_reply_not_a_crash(
    server: GraderServer, tmp_path: Path
) -> None:
    server.responder = lambda body, n: Reply(html="<html><body>Open WebUI</body></html>")
    with pytest.raises(RewardError) as error:
        score(grader(server, tmp_path, max_retries=1), images(1), ["a red cube"])
    message = str(error.value)
    assert "unusable reply: not a chat completion" in message and "Open WebUI" in message
    assert "after 2 attempts" in message and len(server.requests) == 2
    missing = grader(server, tmp_path, max_retries=0, on_error="missing")
    scores, _ = score(missing, images(1), ["a red cube"])
    assert torch.isnan(scores).all()


def test_missing_mode_marks_nan_and_counts_it(server: GraderServer, tmp_path: Path) -> None:
    def half(body: dict[str, Any], n: int) -> Reply:
        if prompt_of(body) == "a blue ball":
            return Reply(content="no idea")
        return good(body, n)

    server.responder = half
    spec = RewardSpec(
        name="mllm",
        on_error="missing",
        options={
            "model": "m",
            "base_url": server.url,
            "backoff_s": 0.0,
            "max_retries": 1,
            "cache_path": "none",
        },
    )
    reward = plugins.build_reward(spec)  # the factory is handed the spec's on_error
    scores, info = score(reward, images(2), ["a red cube", "a blue ball"])
    assert scores[0].item() == pytest.approx(0.8) and math.isnan(scores[1].item())
    assert info["missing"] == 1 and info["overall"] == [8.0, None]
    assert info["aspects"]["accuracy"] == [7.0, None] and info["reasons"][1] is None
    assert info["errors"][0].startswith("sample 1: unusable reply")
    json.dumps(info, allow_nan=False)


def test_429_then_success(server: GraderServer, tmp_path: Path) -> None:
    def throttled(body: dict[str, Any], n: int) -> Reply:
        if n == 0:
            return Reply(
                429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}
            )
        return good(body, n)

    server.responder = throttled
    scores, info = score(grader(server, tmp_path), images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8])
    assert info["requests"] == 2 and info["retries"] == 1


def test_persistent_500_fails_with_a_clear_message(server: GraderServer, tmp_path: Path) -> None:
    server.responder = lambda body, n: Reply(500, body={"error": {"message": "model crashed"}})
    with pytest.raises(RewardError) as error:
        score(grader(server, tmp_path, max_retries=3), images(1), ["a red cube"])
    message = str(error.value)
    assert "HTTP 500 from the server" in message and "model crashed" in message
    assert "after 4 attempts" in message
    assert len(server.requests) == 4


def test_a_dead_server_fails_fast_for_the_rest_of_the_batch(
    server: GraderServer, tmp_path: Path
) -> None:
    server.responder = lambda body, n: Reply(500)
    reward = grader(server, tmp_path, max_retries=1, max_concurrency=1)
    with pytest.raises(RewardError, match="could not score 3 of 3 images"):
        score(reward, images(3), ["a red cube", "a blue ball", "a green cone"])
    assert len(server.requests) == 2  # the first image's two tries; the rest never sent


def test_a_server_slower_than_the_timeout(server: GraderServer, tmp_path: Path) -> None:
    server.responder = lambda body, n: Reply(content=grade_json(5.0), delay_s=3.0)
    reward = grader(server, tmp_path, timeout_s=0.2, max_retries=1)
    with pytest.raises(RewardError, match=r"no reply within timeout_s=0.2 \(after 2 attempts\)"):
        score(reward, images(1), ["a red cube"])
    assert len(server.requests) == 2


def test_timeout_s_bounds_the_whole_reply_not_each_read(
    server: GraderServer, tmp_path: Path
) -> None:
    # every piece comes well within timeout_s (httpx's read timeout); the whole reply does not
    server.responder = lambda body, n: Reply(content=grade_json(5.0), trickle_s=0.3)
    reward = grader(server, tmp_path, timeout_s=1.0, max_retries=0, cache_path="none")
    with pytest.raises(RewardError, match=r"no reply within timeout_s=1 \(after 1 attempt\)"):
        score(reward, images(1), ["a red cube"])
    assert len(server.requests) == 1


def test_a_request_given_up_on_holds_its_slot_until_it_ends(
    server: GraderServer, tmp_path: Path
) -> None:
    """A retry after a timeout waits for the abandoned request to end: max_concurrency
    counts requests the server is still answering, so they cannot pile up on a slow one."""
    requesting: list[int] = []  # the grader's request threads alive as each request arrives

    def slow(body: dict[str, Any], n: int) -> Reply:
        alive = [t for t in threading.enumerate() if t.name == "dsharp-mllm-request"]
        requesting.append(len(alive))
        return Reply(content=grade_json(5.0), trickle_s=0.15)

    server.responder = slow
    reward = grader(
        server, tmp_path, timeout_s=0.5, max_retries=1, max_concurrency=1, cache_path="none"
    )
    with pytest.raises(RewardError, match=r"no reply within timeout_s=0.5 \(after 2 attempts\)"):
        score(reward, images(1), ["a red cube"])
    _join_grader_threads()
    assert requesting == [1, 1]  # the retry came once the request given up on had ended


def _signal_main_when(ready: Callable[[], bool], signum: int) -> threading.Thread:
    """A thread that sends ``signum`` to the main thread once ``ready()`` (as Ctrl-C or a
    scheduler's SIGTERM would arrive); it sends nothing if that never happens."""

    def watch() -> None:
        for _ in range(3000):
            if ready():
                signal.pthread_kill(threading.main_thread().ident, signum)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _join_grader_threads() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("dsharp-mllm"):
            thread.join(timeout=30)


def test_sigterm_stops_the_batch_without_waiting_for_replies_in_flight(
    server: GraderServer, tmp_path: Path
) -> None:
    from dsharp.cli import _stop  # the CLI's SIGTERM: a KeyboardInterrupt in the main thread

    server.responder = lambda body, n: Reply(content=grade_json(5.0), delay_s=5.0)
    reward = grader(server, tmp_path, max_concurrency=2, max_retries=3, cache_path="none")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        watcher = _signal_main_when(lambda: server.in_flight == 2, signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            score(reward, images(4), ["a red cube", "a blue ball", "a green cone", "a red cube"])
        held = server.in_flight  # the server still holds both replies: nobody waited for them
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    server.release.set()  # the held replies go out; the threads that sent them end
    _join_grader_threads()
    assert held == 2
    assert len(server.requests) == 2  # the other two images were never sent


def test_ctrl_c_ends_a_backoff_wait_and_no_retry_follows(
    server: GraderServer, tmp_path: Path
) -> None:
    server.responder = lambda body, n: Reply(503)
    reward = grader(server, tmp_path, max_retries=1, backoff_s=5.0, cache_path="none")
    watcher = _signal_main_when(
        lambda: len(server.requests) == 1 and server.in_flight == 0, signal.SIGINT
    )
    with pytest.raises(KeyboardInterrupt):
        score(reward, images(1), ["a red cube"])
    watcher.join()
    _join_grader_threads()
    assert len(server.requests) == 1  # the retry due after the backoff never went out


def test_auto_structured_output_falls_back_when_the_server_rejects_it(
    server: GraderServer, tmp_path: Path
) -> None:
    def no_schema(body: dict[str, Any], n: int) -> Reply:
        if body.get("response_format", {}).get("type") == "json_schema":
            return Reply(400, body={"error": {"message": "response_format not supported"}})
        return Reply(content="```\n" + grade_json(OVERALL[prompt_of(body)]) + "\n```")

    server.responder = no_schema
    reward = grader(server, tmp_path, cache_path="none", max_concurrency=1)
    scores, info = score(reward, images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8]) and info["retries"] == 0
    assert info["structured_output"] == "json_object"
    kinds = [r["body"].get("response_format", {}).get("type") for r in server.requests]
    assert kinds == ["json_schema", "json_object"]
    score(reward, images(2), ["a blue ball", "a green cone"])  # remembered for this server
    kinds = [r["body"].get("response_format", {}).get("type") for r in server.requests]
    assert kinds[2:] == ["json_object", "json_object"]

    strict = grader(server, tmp_path, cache_path="none", structured_output="json_schema")
    with pytest.raises(RewardError, match="may not support structured_output='json_schema'"):
        score(strict, images(1), ["a red cube"])


def test_requests_run_concurrently_up_to_the_limit(server: GraderServer, tmp_path: Path) -> None:
    def gathered(body: dict[str, Any], n: int) -> Reply:
        deadline = time.monotonic() + 5.0  # hold each reply until 3 are in flight (or 5 s)
        while server.in_flight < 3 and n < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return Reply(content=grade_json(5.0), delay_s=0.1)

    server.responder = gathered
    prompts = ["a red cube", "a blue ball", "a green cone", "a red cube"]
    score(grader(server, tmp_path, cache_path="none", max_concurrency=3), images(4), prompts)
    assert server.peak_in_flight == 3 and len(server.requests) == 4


# --------------------------------------------------------------------------- the cache


def test_cache_makes_rescoring_free(server: GraderServer, tmp_path: Path) -> None:
    batch, prompts = images(2), ["a red cube", "a blue ball"]
    first, _ = score(grader(server, tmp_path), batch, prompts)
    again, info = score(grader(server, tmp_path), batch, prompts)  # a new reward, same file
    assert len(server.requests) == 2
    assert torch.equal(first, again) and info["cached"] == 2 and info["requests"] == 0
    assert info["aspects"]["creativity"] == [7.0, 7.0]
    assert len(GradeCache(tmp_path / "grades.sqlite")) == 2

    score(grader(server, tmp_path), batch, ["a blue ball", "a red cube"])  # prompts swapped
    score(grader(server, tmp_path, model="other-vlm"), batch, prompts)
    score(grader(server, tmp_path, cache_path="none"), batch, prompts)
    assert len(server.requests) == 8
    # the same model name on another server is another grader: its grades are not reused
    other = GraderServer()
    try:
        score(grader(other, tmp_path), batch, prompts)
        assert len(other.requests) == 2
    finally:
        other.close()


def test_a_grade_made_under_other_request_settings_is_not_reused(
    server: GraderServer, tmp_path: Path
) -> None:
    batch, prompts = images(1), ["a red cube"]
    score(grader(server, tmp_path), batch, prompts)
    changes: list[dict[str, Any]] = [
        {"temperature": 1.0},
        {"max_tokens": 300},
        {"extra_body": {"top_k": 5}},
        {"extra_body": {"temperature": 1.0}},  # a server-side field that changes the answer
        {"extra_body": {"nested": {"a": 1, "b": [1, 2]}}},
        {"structured_output": "json_object"},
        {"image_format": "jpeg"},
    ]
    for changed in changes:
        sent = len(server.requests)
        _, info = score(grader(server, tmp_path, **changed), batch, prompts)
        assert (info["cached"], len(server.requests)) == (0, sent + 1), changed
        _, info = score(grader(server, tmp_path, **changed), batch, prompts)  # its own: cached
        assert (info["cached"], len(server.requests)) == (1, sent + 1), changed
    sent = len(server.requests)
    # extra_body is keyed canonically: the order of its keys does not matter
    reordered = {"nested": {"b": [1, 2], "a": 1}}
    assert score(grader(server, tmp_path, extra_body=reordered), batch, prompts)[1]["cached"] == 1
    # credentials in base_url are not part of the key (who asks does not change the grade)
    with_user = server.url.replace("http://", "http://alice:pw-123456@")
    assert score(grader(server, tmp_path, base_url=with_user), batch, prompts)[1]["cached"] == 1
    assert len(server.requests) == sent
    assert b"pw-123456" not in (tmp_path / "grades.sqlite").read_bytes()


def test_a_cache_written_with_the_old_key_form_misses_without_error(
    server: GraderServer, tmp_path: Path
) -> None:
    import hashlib
    import sqlite3

    from dsharp.rewards.mllm import _pixel_hash

    batch = images(1)
    old = json.dumps(  # the key before temperature & co. were in it
        [
            TEMPLATE_VERSION,
            "test-vlm",
            "png",
            "a red cube",
            _pixel_hash(batch.pil[0]),
            server.url + "/",
        ]
    )
    GradeCache(tmp_path / "grades.sqlite")
    with sqlite3.connect(tmp_path / "grades.sqlite") as db:
        row = (hashlib.sha256(old.encode()).hexdigest(), "test-vlm", TEMPLATE_VERSION)
        db.execute(
            "INSERT INTO grades VALUES (?, ?, ?, ?, 0)",
            (*row, json.dumps(parse_grade(grade_json(1.0)))),
        )
    scores, info = score(grader(server, tmp_path), batch, ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8]) and info["cached"] == 0


def test_failures_are_not_cached_and_duplicates_cost_one_request(
    server: GraderServer, tmp_path: Path
) -> None:
    server.responder = lambda body, n: Reply(content="nothing useful")
    reward = grader(server, tmp_path, max_retries=0, on_error="missing")
    score(reward, images(1), ["a red cube"])
    assert len(GradeCache(tmp_path / "grades.sqlite")) == 0
    server.responder = good
    same = RewardImages.from_pil([images(1).pil[0]] * 3)
    scores, info = score(reward, same, ["a red cube"] * 3)
    assert scores.tolist() == pytest.approx([0.8] * 3) and info["requests"] == 1


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "grade cache" in r.getMessage()]


def test_a_locked_cache_costs_no_grade_and_warns_once(
    server: GraderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    path = tmp_path / "grades.sqlite"
    reward = grader(server, tmp_path, on_error="missing")
    reward._cache.timeout_s = 0.05  # the busy timeout: do not wait 30 s for the lock
    holder = sqlite3.connect(path, isolation_level=None)  # another process, mid-write
    holder.execute("BEGIN EXCLUSIVE")
    try:
        scores, info = score(reward, images(2), ["a red cube", "a blue ball"])
        assert scores.tolist() == pytest.approx([0.8, 0.35]) and info["missing"] == 0
        (warning,) = _cache_warnings(caplog)
        assert warning.startswith(f"mllm: the grade cache {path} cannot be written")
        assert "database is locked" in warning and "\n" not in warning
        score(reward, images(1, size=8), ["a green cone"])  # carries on without the cache
        assert len(_cache_warnings(caplog)) == 1 and len(server.requests) == 3
    finally:
        holder.rollback()
        holder.close()
    assert len(GradeCache(path)) == 0


def test_a_cache_that_cannot_be_read_costs_no_grade(
    server: GraderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    path = tmp_path / "grades.sqlite"
    reward = grader(server, tmp_path)  # on_error: raise, and still no error
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE grades")  # e.g. a file another tool rewrote
    scores, info = score(reward, images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8]) and info["requests"] == 1
    (warning,) = _cache_warnings(caplog)
    assert f"{path} cannot be read" in warning and "no such table" in warning


def test_default_cache_location_follows_dsharp_cache(tmp_path: Path) -> None:
    assert default_cache_path() == tmp_path / "cache" / "mllm.sqlite"


# --------------------------------------------------------------------------- secrets


def test_the_key_never_leaks(
    server: GraderServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def echo(body: dict[str, Any], n: int) -> Reply:  # a server that echoes the credential
        if n < 2:
            return Reply(503, body={"error": {"message": f"overloaded for Bearer {KEY}"}})
        if n == 2:
            return Reply(content=grade_json(8.0))
        return Reply(401, body={"error": {"message": f"invalid api key {KEY}"}})

    server.responder = echo
    caplog.set_level(logging.DEBUG)
    logging.getLogger("openai").setLevel(logging.DEBUG)
    logging.getLogger("httpx2").setLevel(logging.DEBUG)
    reward = grader(server, tmp_path)
    assert KEY not in repr(reward)
    score(reward, images(1), ["a red cube"])
    with pytest.raises(RewardError) as error:
        score(reward, images(1, size=8), ["a blue ball"])
    assert "HTTP 401" in str(error.value) and "<redacted>" in str(error.value)
    out, err = capsys.readouterr()
    texts = [str(error.value), out, err, caplog.text, *(r.getMessage() for r in caplog.records)]
    assert "retry 1/2" in caplog.text  # retries are logged, scrubbed
    texts.append(json.dumps(reward(images(1), ["a red cube"], [{}])[1]))  # cached: info
    assert not [t for t in texts if KEY in t]
    assert KEY.encode() not in (tmp_path / "grades.sqlite").read_bytes()


def test_a_key_echoed_into_the_grade_reasons_is_scrubbed(
    server: GraderServer, tmp_path: Path
) -> None:
    def echo_in_reason(body: dict[str, Any], n: int) -> Reply:
        doc = json.loads(grade_json(8.0))
        doc["accuracy"]["reason"] = f"request had Authorization: Bearer {KEY}"
        return Reply(content=json.dumps(doc))

    server.responder = echo_in_reason
    reward = grader(server, tmp_path)
    _, info = score(reward, images(1), ["a red cube"])
    assert KEY not in json.dumps(info) and "<redacted>" in json.dumps(info)
    assert KEY.encode() not in (tmp_path / "grades.sqlite").read_bytes()


def test_a_placeholder_key_made_of_words_leaves_the_reasons_words(
    server: GraderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local server without auth takes any key; llama.cpp's docs use ``sk-no-key-required``.
    Runs of 8 of its characters ("required") were scrubbed from every reason as if a key's
    masked echo; the key whole still is."""
    placeholder = "sk-no-key-required"
    monkeypatch.setenv("OPENAI_API_KEY", placeholder)

    def reason(body: dict[str, Any], n: int) -> Reply:
        doc = json.loads(grade_json(8.0))
        doc["accuracy"]["reason"] = f"the required red cube is there (key {placeholder})"
        return Reply(content=json.dumps(doc))

    server.responder = reason
    _, info = score(grader(server, tmp_path), images(1), ["a red cube"])
    shown = json.dumps(info)
    assert "the required red cube is there (key <redacted>)" in shown, shown


def test_credentials_in_the_base_url_are_scrubbed_also_as_the_header_they_are_sent_in(
    server: GraderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client sends ``user:password`` from the URL as a Basic Authorization header; a
    server (or proxy) that echoes its request headers must not show them in any form."""
    import base64

    password = "sk-URLpass-9876"
    sent = base64.b64encode(f"me:{password}".encode()).decode()

    def echo_header(body: dict[str, Any], n: int) -> Reply:
        auth = server.requests[n]["auth"]
        return Reply(status=401, body={"error": {"message": f"bad credentials: {auth}"}})

    server.responder = echo_header
    url = server.url.replace("http://", f"http://me:{password}@")
    reward = grader(server, tmp_path, base_url=url, max_retries=1)
    with pytest.raises(RewardError) as error:
        score(reward, images(1), ["a red cube"])
    assert server.requests[0]["auth"] == f"Basic {sent}"  # what the server saw
    message = str(error.value)
    assert "HTTP 401" in message and "Basic <redacted>" in message
    # dsharp's own log lines (the openai client's DEBUG records show its request as sent)
    texts = [message, *(r.getMessage() for r in caplog.records if r.name.startswith("dsharp"))]
    assert not [t for t in texts if password in t or sent in t or sent.rstrip("=") in t]


def test_credentials_in_the_base_url_reach_no_log_record_and_still_authenticate(
    server: GraderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The HTTP client logs each request's URL at INFO, which a program using dsharp may
    show: the URL it is given holds no credentials; they go in the header it would send."""
    import base64

    password = "sk-URLpass-9876"
    sent = base64.b64encode(f"me:{password}".encode()).decode()
    server.responder = lambda body, n: Reply(content=grade_json(8.0))
    caplog.set_level(logging.DEBUG)
    url = server.url.replace("http://", f"http://me:{password}@")
    reward = grader(server, tmp_path, base_url=url)
    scores, _ = score(reward, images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8])
    assert server.requests[0]["auth"] == f"Basic {sent}"  # as the client sent it before
    texts = [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in t for t in texts)  # the client's own line was captured
    assert not [t for t in texts if password in t or sent in t]


def test_a_key_in_the_base_urls_query_is_refused_without_echoing_it(
    server: GraderServer, tmp_path: Path
) -> None:
    """Such a URL never worked (the client appends chat/completions after the query) and
    the HTTP client logs it whole: it is refused, and the refusal does not quote it."""
    with pytest.raises(RewardError) as error:
        grader(server, tmp_path, base_url=server.url + "?key=sk-QUERY-5544", max_retries=0)
    assert "expected no query string" in str(error.value)
    assert "sk-QUERY-5544" not in str(error.value)
    assert server.requests == []


def test_a_key_in_the_base_urls_fragment_is_refused_by_the_factory_and_the_recipe_check(
    server: GraderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fragment is never sent to a server, but the HTTP client logs the URL with it: a key
    written there would reach the log. Refused like a query, and the refusal does not quote
    it, by the reward and by ``dsharp recipes validate`` alike."""
    from dsharp.rewards.mllm import check_mllm_options

    caplog.set_level(logging.DEBUG)
    url = server.url + "#key=sk-FRAGMENT-5544"
    for refuse in (
        lambda: grader(server, tmp_path, base_url=url, max_retries=0),
        lambda: check_mllm_options({"model": "m", "base_url": url}),
    ):
        with pytest.raises(RewardError, match="option 'base_url': expected no fragment") as error:
            refuse()
        assert "sk-FRAGMENT-5544" not in str(error.value)
    assert server.requests == []
    assert not [r for r in caplog.records if "sk-FRAGMENT-5544" in r.getMessage()]


@pytest.mark.parametrize(
    ("secret_url", "reason"),
    [
        (lambda url: url + "?key=sk-LIBRARY-5544", "expected no query string"),
        (lambda url: url + "#sk-LIBRARY-5544", "expected no fragment"),
        (lambda url: url.replace("http://", "http://me:sk-LIBRARY-5544@"), "credentials"),
    ],
    ids=["query", "fragment", "credentials"],
)
def test_a_grader_built_around_a_client_refuses_a_url_the_client_would_log(
    server: GraderServer,
    caplog: pytest.LogCaptureFixture,
    secret_url: Callable[[str], str],
    reason: str,
) -> None:
    """Library use that skips :func:`build_mllm_reward`: the grader is handed an ``openai``
    client as is, whose URL the HTTP client logs with every request (at INFO). The grader
    refuses a URL holding a query, a fragment or credentials before any request."""
    import openai

    from dsharp.rewards.mllm import GraderSettings, MLLMGrader

    caplog.set_level(logging.DEBUG)
    client = openai.OpenAI(api_key=KEY, base_url=secret_url(server.url), max_retries=0)
    with pytest.raises(RewardError, match=f"option 'base_url': {reason}") as error:
        grader = MLLMGrader(GraderSettings(model="m", max_retries=0), client, None, [KEY])
        score(grader, images(1), ["a red cube"])
    assert "sk-LIBRARY-5544" not in str(error.value)
    assert server.requests == []
    assert not [r for r in caplog.records if "sk-LIBRARY-5544" in r.getMessage()]


def test_a_grader_built_around_a_plain_client_scores(server: GraderServer) -> None:
    import openai

    from dsharp.rewards.mllm import GraderSettings, MLLMGrader

    client = openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0)
    grader = MLLMGrader(GraderSettings(model="m", max_retries=0), client, None, [KEY])
    scores, _ = score(grader, images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8])


def test_a_token_pasted_into_api_key_env_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_abcDEF123canary"
    monkeypatch.delenv(token, raising=False)
    with pytest.raises(RewardError) as error:
        build_mllm_reward(model="m", base_url="http://127.0.0.1:9/v1", api_key_env=token)
    assert token not in str(error.value) and "named by api_key_env" in str(error.value)


def test_the_cli_scores_and_fails_in_one_line_without_the_key(
    server: GraderServer, tmp_path: Path
) -> None:
    from dsharp.cli import app

    path = tmp_path / "x.png"
    images(1).pil[0].save(path)
    args = ["rewards", "score", "mllm", "--image", str(path), "--prompt", "a red cube", "--json"]
    args += ["--set", f"base_url={server.url}", "--set", "model=my-vlm", "--set", "backoff_s=0"]
    args += ["--set", "max_retries=1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["reward"] == "mllm" and doc["scores"] == [pytest.approx(0.8)]
    assert doc["info"]["overall"] == [8.0]
    assert server.requests[0]["body"]["model"] == "my-vlm"

    for reply, reason in [
        (Reply(500, body={"error": {"message": f"boom {KEY}"}}), "HTTP 500 from the server"),
        (Reply(content="I cannot grade this."), "the reply has no JSON object"),
    ]:
        server.responder = lambda body, n, reply=reply: reply
        failed = CliRunner().invoke(app, [*args, "--set", "cache_path=none"])
        assert failed.exit_code == 1
        assert len(failed.stderr.strip().splitlines()) == 1
        assert failed.stderr.startswith("error: reward 'mllm': mllm grader (my-vlm)")
        assert reason in failed.stderr and KEY not in failed.output


def test_base_url_comes_from_the_environment(
    server: GraderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("MY_GRADER_KEY", "sk-other-key-123456")
    reward = build_mllm_reward(model="m", api_key_env="MY_GRADER_KEY", cache_path="none")
    scores, _ = score(reward, images(1), ["a red cube"])
    assert scores.tolist() == pytest.approx([0.8])
    assert server.requests[0]["auth"] == "Bearer sk-other-key-123456"


# --------------------------------------------------------------------------- options


def test_bad_options_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RewardError, match="option 'model': required"):
        build_mllm_reward(cache_path="none")
    with pytest.raises(RewardError, match="option 'structured_output': expected one of auto"):
        build_mllm_reward(model="m", structured_output="xml", cache_path="none")
    with pytest.raises(RewardError, match=r"option 'max_concurrency': expected an integer >= 1"):
        build_mllm_reward(model="m", max_concurrency=0, cache_path="none")
    with pytest.raises(RewardError, match=r"option 'timeout_s': expected a number > 0"):
        build_mllm_reward(model="m", timeout_s=0, cache_path="none")
    with pytest.raises(RewardError, match="option 'base_url': expected an http"):
        build_mllm_reward(model="m", base_url="localhost:8000", cache_path="none")
    # the client appends chat/completions after a query, and logs the URL with its key
    with pytest.raises(RewardError, match=r"option 'base_url': expected no query string"):
        build_mllm_reward(model="m", base_url="http://h/v1?key=sk-x", cache_path="none")
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(RewardError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        build_mllm_reward(model="m", api_key_env="NO_SUCH_KEY_VAR", cache_path="none")
    with pytest.raises(RewardError) as error:  # the key pasted where its variable's name goes
        build_mllm_reward(model="m", api_key_env=KEY, cache_path="none")
    assert "NAME of the variable" in str(error.value) and KEY not in str(error.value)
    with pytest.raises(RewardError, match="bad options: .*'colour'"):
        plugins.build_reward(RewardSpec(name="mllm", options={"model": "m", "colour": 1}))


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/v1",  # Invalid IPv6 URL, from the build: exit 1, no option named
        "http://h:99999/v1",  # a port out of range: retried as unreachable
        f"http://h:{KEY}/v1",  # the parser's own error would quote the "port"
        f"http://u:{KEY}@h:abc/v1",  # httpx's InvalidURL at the build
        "http:///v1",  # no host
    ],
    ids=["bad ipv6", "port out of range", "key as the port", "bad port", "no host"],
)
def test_a_base_url_the_client_cannot_use_is_refused_by_the_check_and_the_factory(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused as every other base_url, naming the option, quoting nothing of it."""
    from dsharp.rewards.mllm import check_mllm_options

    caplog.set_level(logging.DEBUG)
    said = "option 'base_url': not a URL the client can use"
    for refuse in (
        lambda: check_mllm_options({"model": "m", "base_url": url}),
        lambda: build_mllm_reward(model="m", base_url=url, cache_path="none"),
    ):
        with pytest.raises(RewardError) as error:
            refuse()
        message = str(error.value)
        assert said in message or "option 'base_url' holds the API key" in message, message
        assert KEY not in message and "abc" not in message and "99999" not in message
    assert KEY not in caplog.text


@pytest.mark.parametrize("url", ["http://h:8000/v1 ", "http://h/v 1", "http://h/v1\n"])
def test_a_base_url_with_a_space_is_refused(url: str) -> None:
    """A trailing space went on into every request's path (``/v1%20/chat/completions``)."""
    from dsharp.rewards.mllm import check_mllm_options

    with pytest.raises(RewardError, match="option 'base_url': expected no spaces"):
        check_mllm_options({"model": "m", "base_url": url})


def test_a_base_url_scheme_in_capitals_is_accepted() -> None:
    """URL schemes ignore case (RFC 3986); ``HTTP://`` was refused as no http URL."""
    from dsharp.rewards.mllm import check_mllm_options

    check_mllm_options({"model": "m", "base_url": "HTTP://localhost:8000/v1"})


def test_a_bad_openai_base_url_is_named_as_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://h:abc/v1")
    with pytest.raises(RewardError) as error:
        build_mllm_reward(model="m", cache_path="none")
    assert str(error.value) == (
        "mllm: environment variable OPENAI_BASE_URL: not a URL the client can use: expected "
        "http(s)://HOST[:PORT]/PATH"
    )


# --------------------------------------------------------------------------- parsing


def _grade_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(grade_json(6.5))
    doc.update(changes)
    return doc


def test_parse_grade_accepts_variants_and_rejects_invented_scores() -> None:
    assert parse_grade(grade_json(6.5))["overall"] == 6.5
    think = '<think>maybe {"overall": 1}</think>\n' + grade_json(9)
    assert parse_grade(think)["overall"] == 9.0
    trailing = grade_json(4).replace('"overall"', '"extra": [1, 2,], "overall"')[:-1] + ",}"
    assert parse_grade(f"```json\n{trailing}\n```")["overall"] == 4.0
    renamed = {
        "Accuracy to the prompt": 8,
        "Creativity and originality": "7",
        "Visual quality and realism": {"rating": 6, "justification": "crisp"},
        "Consistency and cohesion": 5,
        "Emotional or thematic resonance": 4,
        "Overall score": 6.5,
    }
    grade = parse_grade("Scores: " + json.dumps(renamed) + " Thanks.")
    assert grade["aspects"] == {
        "accuracy": 8.0,
        "creativity": 7.0,
        "visual_quality": 6.0,
        "consistency": 5.0,
        "resonance": 4.0,
    }
    assert grade["reasons"]["visual_quality"] == "crisp" and grade["overall"] == 6.5

    no_overall = _grade_doc()
    del no_overall["overall"]
    with pytest.raises(GradeParseError, match="no numeric score for 'overall'"):
        parse_grade(json.dumps(no_overall))  # never averaged into an invented overall
    with pytest.raises(GradeParseError, match="'overall' is 85.0, outside 0-10"):
        parse_grade(json.dumps(_grade_doc(overall=85)))
    with pytest.raises(GradeParseError, match="no numeric score for 'creativity'"):
        parse_grade(json.dumps(_grade_doc(creativity={"reason": "n/a"})))
    with pytest.raises(GradeParseError, match="no JSON object"):
        parse_grade("8/10, nice image")
    with pytest.raises(GradeParseError, match="empty"):
        parse_grade(None)


def test_iter_json_objects_yields_fences_before_embedded_objects_and_guesses_nothing() -> None:
    text = 'first {"a": 1} then ```json\n{"b": 2}\n``` and {"c": {"d": 3}}'
    # the fenced object first, then every embedded one (the fenced one again among them)
    found = list(iter_json_objects(text))
    assert found == [{"b": 2}, {"a": 1}, {"b": 2}, {"c": {"d": 3}}, {"d": 3}]
    assert list(iter_json_objects("no json {here")) == []
    assert next(iter_json_objects('[1, 2] {"x": [1, {"y": 2}]}')) == {"x": [1, {"y": 2}]}
