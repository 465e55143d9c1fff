"""open_clip weights that are not cached: one clear line, at once, saying what to do.

With ``HF_HUB_OFFLINE`` set the line says the weights are not in the cache and names the
option that takes a local file; without it, on a machine with no network, one request without
the hub client's retries finds the hub unreachable (instead of about 25 s of retries a file
and their warnings) and the line says how to work offline. No test touches the network: the
hub client's functions and ``open_clip.create_model`` are replaced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import open_clip
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from PIL import Image
from typer.testing import CliRunner

from dsharp.cli import app
from dsharp.rewards.base import RewardError

REPO = "timm/vit_large_patch14_clip_224.openai"
WHAT = f"clip reward: open_clip weights 'openai' of 'ViT-L-14' (hub repo {REPO})"
NO_DNS = "[Errno -2] Name or service not known"


def _failed_download(root: BaseException) -> RuntimeError:
    """The error chain open_clip raises when the hub client gives up on the weights."""
    try:
        try:
            try:
                raise LocalEntryNotFoundError(
                    "An error happened while trying to locate the file on the Hub and we cannot "
                    "find the requested files in the local cache. Please check your connection "
                    "and try again or make sure your Internet connection is on."
                ) from root
            except LocalEntryNotFoundError as e:
                raise FileNotFoundError(  # noqa: B904 (open_clip raises it so)
                    f"Failed to download file (open_clip_pytorch_model.bin) for {REPO}. "
                    f"Last error: {e}"
                )
        except FileNotFoundError as e:
            logging.error(f"Failed to download weights for tag 'openai': {e}")  # as open_clip
            raise RuntimeError(f"Failed to download weights for tag 'openai': {e}")  # noqa: B904
    except RuntimeError as e:
        return e


def _create_failing(root: BaseException, hub_noise: bool = False):
    def create_model(*args: Any, **kwargs: Any) -> Any:
        if hub_noise:  # what the hub client prints while it retries
            hub = logging.getLogger("huggingface_hub.utils._http")
            hub.warning(f"'{NO_DNS}' thrown while requesting HEAD https://huggingface.co/{REPO}")
            hub.warning("Retrying in 4s [Retry 3/5].")
        raise _failed_download(root)

    return create_model


def _not_called(what: str):
    def fail(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"{what} was called")

    return fail


def _no_dns(*args: Any, **kwargs: Any) -> Any:
    raise httpx2.ConnectError(NO_DNS)


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        Image.new("RGB", (32, 32), "red").save(path)
    return [str(p) for p in paths]


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """HF_HUB_OFFLINE unset and nothing in the hub cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    return monkeypatch


def _score(images: list[str]):
    args = ["rewards", "score", "clip", *images, "--prompt", "a red bicycle", "--json"]
    return CliRunner().invoke(app, args)


def _error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "check your connection" not in result.output
    return lines[0]


def test_offline_says_the_weights_are_not_cached_and_names_the_option(
    images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")
    monkeypatch.setattr(open_clip, "create_model", _create_failing(root))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _not_called("the hub"))
    line = _error_line(_score(images))
    assert line == (
        f"error: {WHAT}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
        "download them where there is network (they are then cached) or give option "
        "'pretrained' a local checkpoint file"
    )


def test_no_network_fails_at_once_and_says_how_to_work_offline(
    images: list[str], online: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def head(url: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(url)
        raise httpx2.ConnectError(NO_DNS)

    online.setattr(huggingface_hub, "get_hf_file_metadata", head)
    online.setattr(open_clip, "create_model", _not_called("open_clip.create_model"))
    line = _error_line(_score(images))
    assert line == (
        f"error: {WHAT}: cannot download from the Hugging Face hub (ConnectError: {NO_DNS}); "
        "to work offline, download them where there is network and set HF_HUB_OFFLINE=1 (the "
        "cache is then used), or give option 'pretrained' a local checkpoint file"
    )
    assert len(asked) == 1 and asked[0].endswith(
        f"/{REPO}/resolve/main/open_clip_pytorch_model.bin"
    )


def test_a_download_that_fails_later_keeps_its_reason_and_holds_the_retry_lines(
    online: pytest.MonkeyPatch,
) -> None:
    from dsharp.rewards.clip import build_clip_reward

    printed: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = printed.append  # type: ignore[method-assign]
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.addHandler(handler)
    online.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: None)  # answered
    root = httpx2.ReadTimeout("The read operation timed out")
    online.setattr(open_clip, "create_model", _create_failing(root, hub_noise=True))
    try:
        with pytest.raises(RewardError) as caught:
            build_clip_reward(device="cpu")
    finally:
        hub_logger.removeHandler(handler)
    assert str(caught.value).startswith(
        f"{WHAT}: cannot download from the Hugging Face hub "
        "(ReadTimeout: The read operation timed out); to work offline"
    )
    assert printed == []  # the error line says why; the retries' lines are not printed


def test_a_reachable_hub_or_cached_weights_leave_the_load_to_open_clip(
    online: pytest.MonkeyPatch,
) -> None:
    from dsharp.rewards._weights import hub_unreachable
    from dsharp.rewards.clip import build_clip_reward

    def not_found(url: str, *args: Any, **kwargs: Any) -> Any:
        response = httpx2.Response(404, request=httpx2.Request("HEAD", url))
        raise HfHubHTTPError("404 Client Error", response=response)

    online.setattr(huggingface_hub, "get_hf_file_metadata", not_found)
    assert hub_unreachable(REPO, "open_clip_pytorch_model.bin") is None  # it answered
    online.setattr(huggingface_hub, "get_hf_file_metadata", _no_dns)
    assert hub_unreachable(REPO, "x.bin") == f"ConnectError: {NO_DNS}"
    refused = httpx2.ConnectError("[Errno 111] Connection refused")

    def closed(*args: Any, **kwargs: Any) -> Any:
        raise refused

    online.setattr(huggingface_hub, "get_hf_file_metadata", closed)
    assert hub_unreachable(REPO, "x.bin") == "ConnectError: [Errno 111] Connection refused"
    online.setattr(huggingface_hub, "get_hf_file_metadata", _no_dns)
    assert hub_unreachable("not a repo id", "x.bin") is None  # the download's error to report
    for passing in (
        httpx2.ReadTimeout("timed out"),
        httpx2.ConnectTimeout("timed out"),
        httpx2.ConnectError("[Errno 104] Connection reset by peer"),  # may pass: retried
    ):

        def slow(*args: Any, error: Exception = passing, **kwargs: Any) -> Any:
            raise error

        online.setattr(huggingface_hub, "get_hf_file_metadata", slow)
        assert hub_unreachable(REPO, "x.bin") is None  # the download's retries may get through
    online.setattr(huggingface_hub, "get_hf_file_metadata", _no_dns)
    # Cached: no request first, and an error that is not the hub's keeps the plain message.
    online.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/file")
    online.setattr(huggingface_hub, "get_hf_file_metadata", _not_called("the hub"))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Error(s) in loading state_dict for CLIP")

    online.setattr(open_clip, "create_model", broken)
    with pytest.raises(RewardError) as caught:
        build_clip_reward(device="cpu")
    assert str(caught.value) == (
        "clip reward: cannot load open_clip model 'ViT-L-14' with weights 'openai': "
        "RuntimeError: Error(s) in loading state_dict for CLIP"
    )


def test_hub_checkpoints_of_other_rewards_fail_at_once_without_network(
    online: pytest.MonkeyPatch,
) -> None:
    from dsharp.rewards.hpsv2 import build_hpsv2_reward

    online.setattr(huggingface_hub, "get_hf_file_metadata", _no_dns)
    online.setattr(huggingface_hub, "hf_hub_download", _not_called("hf_hub_download"))
    with pytest.raises(RewardError) as caught:
        build_hpsv2_reward(device="cpu")
    assert str(caught.value) == (
        "hpsv2 reward option 'checkpoint': cannot get HPS_v2.1_compressed.pt from hub repo "
        f"'xswu/HPSv2': the hub could not be reached (ConnectError: {NO_DNS}); give a local "
        "path instead, or download it where there is network and set HF_HUB_OFFLINE=1 (the "
        "cache is then used)"
    )


def test_records_held_during_a_load_reach_each_handler_once_and_handlers_come_back() -> None:
    import logging

    from dsharp.rewards.clip import _root_log_held

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(f"{record.name}: {record.getMessage()}")

    root, hub, lib = (logging.getLogger(n) for n in ("", "huggingface_hub", "dsharp-test-lib"))
    on_root, on_hub, on_lib = Collect(), Collect(), Collect()
    before = (root.handlers[:], hub.handlers[:])
    root.addHandler(on_root)
    hub.addHandler(on_hub)
    lib.addHandler(on_lib)
    try:
        with _root_log_held():
            lib.warning("own handler")  # its handler prints it now, the root's later
            hub.warning("retrying")  # both the hub's handler and the root's, later
            assert on_root.messages == on_hub.messages == []
        assert on_lib.messages == ["dsharp-test-lib: own handler"]
        assert on_hub.messages == ["huggingface_hub: retrying"]
        assert on_root.messages == ["dsharp-test-lib: own handler", "huggingface_hub: retrying"]

        with pytest.raises(RuntimeError), _root_log_held():
            hub.warning("dropped")
            raise RuntimeError("the load failed")
        assert on_hub.messages == ["huggingface_hub: retrying"]  # its error line says why
        assert on_root in root.handlers and on_hub in hub.handlers  # put back after an error
    finally:
        root.removeHandler(on_root)
        hub.removeHandler(on_hub)
        lib.removeHandler(on_lib)
    assert (root.handlers, hub.handlers) == before


def test_an_exception_chain_that_loops_back_is_followed_once() -> None:
    from dsharp.rewards._weights import exception_chain

    outer, inner = RuntimeError("outer"), ValueError("inner")
    outer.__cause__, inner.__context__ = inner, outer
    assert exception_chain(outer) == [outer, inner]
