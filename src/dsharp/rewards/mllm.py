"""The MLLM grader reward (``mllm``): a multimodal model on any OpenAI-compatible server.

Each image is sent with its prompt and a rubric of the paper's five aspects (accuracy to
the prompt; creativity and originality; visual quality and realism; consistency and
cohesion; emotional or thematic resonance), each scored 0-10 with a short reason, plus an
overall score, requested as JSON. The reward is ``overall / 10``; per-aspect scores, reasons
and token counts go to ``info``.

Robustness is explicit rather than left to the client: the ``openai`` client's own retries
are off, and this module retries 408/409/429/5xx, timeouts, connection errors and unusable
replies with exponential backoff. ``timeout_s`` bounds each attempt as a whole (httpx's own
timeout only bounds each read, so a server that trickles its reply would not end it): the
request runs in a daemon thread that the attempt stops waiting for at the deadline. An
interrupt (Ctrl-C, or the CLI's SIGTERM, both a ``KeyboardInterrupt``) stops the batch at
once: no new request or retry starts, backoff waits end, and requests in flight are left to
end on their own in the background. Structured output (``json_schema``) is used where the
server accepts it; otherwise the JSON is dug out of the free text. A sample that still
fails raises :class:`RewardError`, or, with ``on_error: missing``, scores NaN and is
counted: a score is never invented. Grades are cached in SQLite (:mod:`.mllm_cache`), keyed
on the image, the prompt and every setting that changes the request (model, server, rubric,
``temperature``, ``max_tokens``, ``extra_body``, ...); the rubric, request schema and reply
parser are in :mod:`.mllm_rubric`, the options' checks in :mod:`.mllm_options`, the bounded
attempt in :mod:`.mllm_deadline` and the scrubbing of secrets in :mod:`.mllm_secrets`.

The API key is read from the environment variable named by ``api_key_env`` and never
appears in logs, ``info``, the cache or error messages (every outgoing text is scrubbed).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import io
import json
import logging
import math
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dsharp.rewards.base import RewardError, RewardImages
from dsharp.rewards.mllm_cache import GradeCache, grade_key
from dsharp.rewards.mllm_deadline import Aborted, PastDeadline, call_within
from dsharp.rewards.mllm_options import (
    STRUCTURED_MODES,
    GraderSettings,
    check_cache_path,
    check_client_url,
    check_key_env_name,
    grader_settings,
    peek_key,
    read_key,
    refuse_key_in,
    resolve_base_url,
    resolve_cache,
)
from dsharp.rewards.mllm_rubric import (
    ASPECT_KEYS,
    TEMPLATE_VERSION,
    GradeParseError,
    build_messages,
    grade_schema,
    parse_grade,
    response_format,
)
from dsharp.rewards.mllm_secrets import connection, scrub, secrets_of, server_identity

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

_FALLBACK = {"json_schema": "json_object", "json_object": "none"}  # what 'auto' tries next
_RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
_RETRY_AFTER_CAP_S = 60.0

# --------------------------------------------------------------------------- the reward


def _snippet(text: str | None, secrets: Sequence[str], limit: int = 80) -> str:
    """``text`` scrubbed, then cut to ``limit``: cut first, a key across the cut would keep
    its head, which no scrub of the whole key then finds."""
    text = scrub(text or "", secrets)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _reply_content(reply: Any, secrets: Sequence[str]) -> tuple[str | None, str | None]:
    """The first choice's text and finish reason. A reply that is no chat completion (the
    client hands back the raw body when a server at ``base_url`` answers 200 with a web page)
    is a :class:`GradeParseError`, retried like any unusable reply."""
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list):
        raise GradeParseError(f"not a chat completion: {_snippet(str(reply), secrets)}")
    if not choices:
        return None, None
    message = getattr(choices[0], "message", None)
    return getattr(message, "content", None), getattr(choices[0], "finish_reason", None)


def _pixel_hash(image: Image.Image) -> str:
    """A hash of the pixels themselves, stable across PNG encoders and Pillow versions."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:RGB:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def _data_url(image: Image.Image, image_format: str) -> str:
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{image_format};base64,{encoded}"


@dataclass
class _Outcome:
    """What grading one image produced: a grade or an error, and what it cost."""

    grade: dict[str, Any] | None = None
    error: str = ""
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class MLLMGrader:
    """The built ``mllm`` reward: ``(images, prompts, metadata) -> (overall / 10, info)``.

    Built by :func:`build_mllm_reward`; built around a client directly, it refuses a client
    URL that the HTTP client would log a secret in (a query, a fragment, credentials).
    """

    differentiable = False

    def __init__(
        self,
        settings: GraderSettings,
        client: Any,
        cache: GradeCache | None,
        secrets: Sequence[str],
    ):
        check_client_url(client)
        # The URL holds no credentials (checked above). The API key may be nowhere in it,
        # host included; the other secrets (the credentials the factory moved into a
        # header) not in its path, as a user name may well be the host's too.
        url = str(getattr(client, "base_url", "") or "")
        refuse_key_in({"base_url": url}, str(getattr(client, "api_key", "") or ""))
        for secret in secrets:
            refuse_key_in({"base_url": urlsplit(url).path}, secret)
        self.settings = settings
        self._client = client
        self._cache = cache
        self._secrets = tuple(secrets)  # scrubbed from every message and stored reason
        auto = settings.structured_output == "auto"  # start with the best, fall back on 400
        self._mode = "json_schema" if auto else settings.structured_output
        self._mode_lock = threading.Lock()
        # requests in flight, abandoned ones included (see call_within)
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._key_request = self._cache_identity()

    def _cache_identity(self) -> dict[str, Any]:
        """Everything but the image and the prompt that shapes a request or its answer: a
        grade made under other settings (another temperature, ``extra_body``...) must miss."""
        s = self.settings
        return {
            "template": TEMPLATE_VERSION,
            "messages": build_messages("<prompt>", "<image>"),  # the rubric's text itself
            "schema": grade_schema(),
            "model": s.model,
            "server": server_identity(str(getattr(self._client, "base_url", "") or "")),
            "image_format": s.image_format,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "extra_body": s.extra_body,
            "structured_output": s.structured_output,
        }

    def __repr__(self) -> str:  # never the key, never the client (which holds it)
        return f"MLLMGrader(model={self.settings.model!r}, structured_output={self._mode!r})"

    # -- one request ------------------------------------------------------------------

    def _request(self, prompt: str, data_url: str, mode: str) -> dict[str, Any]:
        s = self.settings
        request: dict[str, Any] = {
            "model": s.model,
            "messages": build_messages(prompt, data_url),
            "temperature": s.temperature,
        }
        fmt = response_format(mode)
        if fmt is not None:
            request["response_format"] = fmt
        if s.max_tokens is not None:
            request["max_tokens"] = s.max_tokens
        if s.extra_body:
            request["extra_body"] = s.extra_body
        return request

    def _status_problem(self, error: Any) -> str:
        body = getattr(error, "body", None)
        detail = body.get("message", body) if isinstance(body, dict) else body
        if detail is None:
            return f"HTTP {error.status_code} from the server"
        text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        return f"HTTP {error.status_code} from the server: {_snippet(text, self._secrets, 160)}"

    def _grade_one(
        self,
        prompt: str,
        image: Image.Image,
        stop: threading.Event,
        abort: threading.Event | None = None,
    ) -> _Outcome:
        """Grade one image, retrying what a retry can fix; never raises. Once ``stop`` is set
        no attempt starts and a backoff wait ends; once ``abort`` is, the reply in flight is
        no longer waited for."""
        import openai

        s, out = self.settings, _Outcome()
        abort = abort if abort is not None else threading.Event()
        data_url = _data_url(image, s.image_format)
        mode, failures = self._mode, 0
        while True:
            if abort.is_set():
                out.error = "stopped: the batch was interrupted"
                return out
            if stop.is_set():
                out.error = "not attempted: another sample had already failed"
                return out
            out.requests += 1
            retry_after = 0.0
            try:
                request = self._request(prompt, data_url, mode)
                create = functools.partial(self._client.chat.completions.create, **request)
                reply = call_within(create, s.timeout_s, abort, self._slots)
            except Aborted:
                out.error = "stopped: the batch was interrupted"
                return out
            except PastDeadline:
                problem = f"no reply within timeout_s={s.timeout_s:g}"
            except openai.APIStatusError as e:
                code = e.status_code
                if code in (400, 422) and s.structured_output == "auto" and mode in _FALLBACK:
                    log.info("mllm: server rejected response_format %s (HTTP %s)", mode, code)
                    mode = _FALLBACK[mode]  # a capability probe, not a failure: no retry spent
                    continue
                problem = self._status_problem(e)
                if code not in _RETRY_STATUS and code < 500:
                    if code in (400, 422) and mode != "none":
                        problem += f" (the server may not support structured_output={mode!r})"
                    out.error = problem
                    return out
                retry_after = _retry_after(e)
            except openai.APITimeoutError:
                problem = f"no reply within timeout_s={s.timeout_s:g}"
            except openai.APIConnectionError as e:
                cause = e.__cause__ or e
                problem = f"cannot reach the server ({type(cause).__name__}: {cause})"
            except Exception as e:  # a client-side bug or odd reply: report, do not crash peers
                problem = f"request failed ({type(e).__name__}: {e})"
            else:
                try:
                    text, finish_reason = _reply_content(reply, self._secrets)
                except GradeParseError as e:
                    problem = f"unusable reply: {e}"
                else:
                    self._remember_mode(mode)
                    usage = getattr(reply, "usage", None)
                    out.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                    out.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
                    try:
                        grade = parse_grade(text)
                        # A server may echo request headers into its reasons: never keep the key.
                        grade["reasons"] = {
                            k: scrub(v, self._secrets) for k, v in grade["reasons"].items()
                        }
                        out.grade = grade
                        return out
                    except GradeParseError as e:
                        cut = " (cut off at max_tokens)" if finish_reason == "length" else ""
                        problem = (
                            f"unusable reply: {e}{cut}; reply: {_snippet(text, self._secrets)}"
                        )
            if failures >= s.max_retries:
                tries = failures + 1
                out.error = f"{problem} (after {tries} attempt{'s' if tries > 1 else ''})"
                return out
            delay = max(s.backoff_s * 2**failures, min(retry_after, _RETRY_AFTER_CAP_S))
            failures += 1
            out.retries += 1
            log.info(
                "mllm: %s; retry %d/%d in %.2fs",
                scrub(problem, self._secrets),
                failures,
                s.max_retries,
                delay,
            )
            stop.wait(delay)  # ends at once when the batch stops (a failure, an interrupt)

    def _remember_mode(self, mode: str) -> None:
        if mode != self._mode:
            with self._mode_lock:
                if STRUCTURED_MODES.index(mode) > STRUCTURED_MODES.index(self._mode):
                    log.info("mllm: using structured_output=%s for this server", mode)
                    self._mode = mode

    # -- the cache ----------------------------------------------------------------------
    # The cache only saves requests: one that cannot be read or written (locked by another
    # process past its busy timeout, a full disk, a read-only mount) must never cost a grade
    # already paid for, nor stop the run. It is dropped, with one warning, for this grader.

    def _cache_get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self._cache is None:
            return {}
        try:
            return self._cache.get_many(keys)
        except (sqlite3.Error, OSError, ValueError) as e:  # ValueError: a row that is no JSON
            self._drop_cache("read", e)
            return {}

    def _cache_put(self, grades: dict[str, dict[str, Any]]) -> None:
        if self._cache is None or not grades:
            return
        try:
            self._cache.put_many(grades, self.settings.model, TEMPLATE_VERSION)
        except (sqlite3.Error, OSError, ValueError) as e:
            self._drop_cache("written", e)

    def _drop_cache(self, what: str, error: Exception) -> None:
        path = self._cache.path if self._cache is not None else "?"
        reason = scrub(f"{type(error).__name__}: {error}", self._secrets)
        log.warning(
            "mllm: the grade cache %s cannot be %s (%s); grading without it from now on",
            path,
            what,
            reason,
        )
        self._cache = None

    # -- a batch ----------------------------------------------------------------------

    def _grade_all(self, jobs: dict[str, tuple[str, Image.Image]]) -> dict[str, _Outcome]:
        """Grade each unique (key -> prompt, image) concurrently; in 'raise' mode the first
        failure stops requests not yet started, so a dead server fails fast.

        Any exception while waiting, above all the ``KeyboardInterrupt`` of Ctrl-C or of the
        CLI's SIGTERM, stops everything at once and is re-raised: no request or retry starts,
        backoff waits end, and replies in flight are not waited for."""
        if not jobs:
            return {}
        stop, abort = threading.Event(), threading.Event()
        fail_fast = self.settings.on_error == "raise"

        def work(item: tuple[str, tuple[str, Image.Image]]) -> tuple[str, _Outcome]:
            key, (prompt, image) = item
            outcome = self._grade_one(prompt, image, stop, abort)
            if outcome.grade is None and fail_fast:
                stop.set()
            return key, outcome

        workers = min(self.settings.max_concurrency, len(jobs))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsharp-mllm")
        try:
            futures = [pool.submit(work, item) for item in jobs.items()]
            outcomes = dict(future.result() for future in futures)
        except BaseException:
            abort.set()
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)  # its workers return within POLL_S
            raise
        pool.shutdown()
        return outcomes

    def __call__(
        self, images: RewardImages, prompts: Sequence[str], metadata: Sequence[dict[str, Any]]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        import torch

        s, batch = self.settings, len(images)
        if len(prompts) != batch:
            raise RewardError(f"mllm: got {batch} images but {len(prompts)} prompts")
        pils = images.pil
        keys = [
            grade_key(_pixel_hash(im), str(p), self._key_request)
            for im, p in zip(pils, prompts, strict=True)
        ]
        cached = self._cache_get(keys)
        jobs: dict[str, tuple[str, Image.Image]] = {}
        for key, im, p in zip(keys, pils, prompts, strict=True):
            if key not in cached and key not in jobs:
                jobs[key] = (str(p), im)  # identical (image, prompt) pairs cost one request
        outcomes = self._grade_all(jobs)
        fresh = {k: o.grade for k, o in outcomes.items() if o.grade is not None}
        self._cache_put(fresh)  # kept even if we raise
        grades = {**cached, **fresh}

        errors = [
            f"sample {i}: {scrub(outcomes[k].error, self._secrets)}"
            for i, k in enumerate(keys)
            if k not in grades
        ]
        if errors and s.on_error == "raise":
            raise RewardError(
                f"mllm grader ({s.model}) could not score {len(errors)} of {batch} images; "
                f"first: {errors[0]}"
            )
        for line in errors:
            log.warning("mllm: marked missing: %s", line)

        per_sample = [grades.get(k) for k in keys]
        scores = [g["overall"] / 10.0 if g else math.nan for g in per_sample]
        info: dict[str, Any] = {
            "model": s.model,
            "template": TEMPLATE_VERSION,
            "structured_output": self._mode,
            "overall": [g["overall"] if g else None for g in per_sample],
            "aspects": {
                a: [g["aspects"][a] if g else None for g in per_sample] for a in ASPECT_KEYS
            },
            "reasons": [g["reasons"] if g else None for g in per_sample],
            "cached": sum(k in cached for k in keys),
            "requests": sum(o.requests for o in outcomes.values()),
            "retries": sum(o.retries for o in outcomes.values()),
            "prompt_tokens": sum(o.prompt_tokens for o in outcomes.values()),
            "completion_tokens": sum(o.completion_tokens for o in outcomes.values()),
            "missing": len(errors),
        }
        if errors:
            info["errors"] = errors[:8]
        device = images.tensor.device
        return torch.tensor(scores, dtype=torch.float32, device=device), info


def _retry_after(error: Any) -> float:
    """The server's ``Retry-After`` in seconds (numeric form only), else 0."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0


# --------------------------------------------------------------------------- factory


def check_mllm_options(options: Mapping[str, Any]) -> None:
    """What :func:`build_mllm_reward` refuses in ``options``, checked without the server or
    the cache (so ``dsharp recipes validate`` and the checks before a run say it): every
    value, the form of ``api_key_env`` and of a given ``base_url``, and, where the key's
    variable is set (it need not be), that no option holds the key."""
    defaults = {
        name: param.default
        for name, param in inspect.signature(build_mllm_reward).parameters.items()
    }
    values = {**defaults, **options}
    # the key is not needed here, but where it is set no option may hold it
    refuse_key_in(options, peek_key(values["api_key_env"]))
    model = values.pop("model")
    api_key_env, base_url = values.pop("api_key_env"), values.pop("base_url")
    check_cache_path(values.pop("cache_path"))
    grader_settings(model, **values)
    check_key_env_name(api_key_env)
    if base_url:
        resolve_base_url(base_url)


def build_mllm_reward(
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    max_concurrency: int = 8,
    timeout_s: float = 60.0,
    max_retries: int = 4,
    backoff_s: float = 1.0,
    temperature: float = 0.0,
    structured_output: str = "auto",
    cache_path: str | None = None,
    image_format: str = "png",
    max_tokens: int | None = None,
    extra_body: dict[str, Any] | None = None,
    on_error: str = "raise",
) -> MLLMGrader:
    """Build the grader from recipe options (see the module docstring for the behaviour).

    ``base_url`` defaults to ``$OPENAI_BASE_URL``, then OpenAI's own; the key comes from the
    variable ``api_key_env`` names. ``cache_path`` defaults to ``$DSHARP_CACHE/mllm.sqlite``
    (or ``~/.cache/dsharp/mllm.sqlite``); ``"none"`` disables the cache. ``extra_body`` is
    merged into each request, for server-specific fields.
    """
    # first, before any check that quotes a value: no option may hold the key
    refuse_key_in(dict(locals()), peek_key(api_key_env))  # locals(): the options, no more
    settings = grader_settings(
        model,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
        max_retries=max_retries,
        backoff_s=backoff_s,
        temperature=temperature,
        structured_output=structured_output,
        image_format=image_format,
        max_tokens=max_tokens,
        on_error=on_error,
        extra_body=extra_body,
    )
    check_cache_path(cache_path)  # every option's form before the key is needed
    _, key = read_key(api_key_env)
    url = resolve_base_url(base_url)
    if url != base_url:  # $OPENAI_BASE_URL: logged by the HTTP client with each request
        refuse_key_in({"OPENAI_BASE_URL": url}, key, what="environment variable")
    cache = resolve_cache(cache_path)
    import openai

    plain_url, headers = connection(url)
    client = openai.OpenAI(
        api_key=key,
        base_url=plain_url,
        default_headers=headers or None,
        max_retries=0,
        timeout=settings.timeout_s,
    )
    return MLLMGrader(settings, client, cache, secrets_of(key, url))
