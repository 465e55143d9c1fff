"""open_clip weights, and transformers models, processors and tokenizers, that are not
cached: one clear line, at once, saying what to do.

With ``HF_HUB_OFFLINE`` set the line says the weights are not in the cache and names the
option that takes a local file; without it, on a machine with no network, one request without
the hub client's retries finds the hub unreachable (instead of about 25 s of retries a file
and their warnings; minutes for a processor) and the line says how to work offline. No test
touches the network: the hub client's functions, ``open_clip.create_model`` and the
transformers loaders are replaced.
"""

from __future__ import annotations

import logging
import types
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
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
BLIP_VQA = "Salesforce/blip-vqa-capfilt-large"
OWLV2 = "google/owlv2-base-patch16-ensemble"


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
    from dsharp.hub import exception_chain

    outer, inner = RuntimeError("outer"), ValueError("inner")
    outer.__cause__, inner.__context__ = inner, outer
    assert exception_chain(outer) == [outer, inner]


# --------------------------------------------------------------------------- transformers loads

_UNREACHABLE = (
    "the hub could not be reached (ConnectError: {}); give a local {} instead, or download it "
    "where there is network and set HF_HUB_OFFLINE=1 (the cache is then used)"
)


def _loaders_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each transformers loader of pickscore, compositional and imagereward fails the test
    when called (with nothing cached and no network it would retry each file it asks for)."""
    import transformers

    for cls in ("AutoProcessor", "CLIPModel", "BlipProcessor", "BlipForQuestionAnswering"):
        monkeypatch.setattr(
            getattr(transformers, cls), "from_pretrained", _not_called(f"{cls}.from_pretrained")
        )
    monkeypatch.setattr(
        transformers.BertTokenizer, "from_pretrained", _not_called("BertTokenizer.from_pretrained")
    )


def _asking(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hub's metadata requests, recorded, each failing as with no name resolution."""
    asked: list[str] = []

    def head(url: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(url)
        raise httpx2.ConnectError(NO_DNS)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", head)
    return asked


def _pickscore(**options: Any) -> Any:
    from dsharp.rewards.pickscore import build_pickscore_reward

    return build_pickscore_reward(device="cpu", **options)


def _compositional(**options: Any) -> Any:
    from dsharp.rewards.compositional import build_compositional_reward

    return build_compositional_reward(device="cpu", noun_phrases="rules", **options)


@pytest.mark.parametrize(
    ("build", "option", "repo", "asked_for"),
    [
        (_pickscore, "processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config"),
        # its processor defaults to its model, checked first: the option that names the repo
        (_compositional, "model", "Salesforce/blip-vqa-capfilt-large", "config"),
    ],
    ids=["pickscore", "compositional"],
)
def test_processors_of_uncached_hub_ids_fail_at_once_without_network(
    online: pytest.MonkeyPatch, build: Any, option: str, repo: str, asked_for: str
) -> None:
    online.setenv("HF_TOKEN", "hf_NotToBeShown")
    asked = _asking(online)
    _loaders_not_called(online)
    with pytest.raises(RewardError) as caught:
        build()
    reward = build.__name__.lstrip("_")
    assert str(caught.value) == (
        f"{reward} reward option {option!r}: cannot load hub repo {repo!r}: "
        + _UNREACHABLE.format(NO_DNS, "folder")
    )
    assert "hf_NotToBeShown" not in str(caught.value)
    assert asked == [f"https://huggingface.co/{repo}/resolve/main/{asked_for}.json"]


def test_a_pickscore_model_of_an_uncached_hub_id_fails_at_once_without_network(
    online: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import transformers

    asked = _asking(online)
    _loaders_not_called(online)
    processor = types.SimpleNamespace(tokenizer=object(), image_processor=object())
    loaded: list[str] = []

    def local_processor(source: str, **kwargs: Any) -> Any:
        loaded.append(source)
        return processor

    online.setattr(transformers.AutoProcessor, "from_pretrained", local_processor)
    with pytest.raises(RewardError) as caught:
        _pickscore(processor=str(tmp_path))  # a local folder: no request
    assert loaded == []  # both sources are checked before either loads
    assert str(caught.value) == (
        "pickscore reward option 'model': cannot load hub repo 'yuvalkirstain/PickScore_v1': "
        + _UNREACHABLE.format(NO_DNS, "folder")
    )
    assert asked == ["https://huggingface.co/yuvalkirstain/PickScore_v1/resolve/main/config.json"]


def test_the_imagereward_tokenizer_of_an_uncached_hub_id_fails_before_the_checkpoint_is_read(
    online: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dsharp.rewards.imagereward as imagereward

    asked = _asking(online)
    _loaders_not_called(online)
    online.setattr(imagereward, "load_state_dict", _not_called("the checkpoint's read"))
    checkpoint = tmp_path / "ImageReward.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(RewardError) as caught:
        imagereward.build_imagereward_reward(model=str(checkpoint), device="cpu")
    assert str(caught.value) == (
        "imagereward reward option 'tokenizer': cannot load hub repo 'bert-base-uncased': "
        + _UNREACHABLE.format(NO_DNS, "folder")
    )
    assert asked == ["https://huggingface.co/bert-base-uncased/resolve/main/tokenizer_config.json"]


def test_cached_offline_answered_or_local_loads_go_to_the_loader(
    online: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dsharp.rewards._weights import PROCESSOR_FILES, from_pretrained

    calls: list[tuple[str, dict[str, Any]]] = []

    def loader(source: str, **kwargs: Any) -> str:
        calls.append((source, kwargs))
        return "loaded"

    def load(source: str) -> str:
        return from_pretrained("r", "processor", loader, source, files=PROCESSOR_FILES)

    cached: list[str] = []

    def in_cache(repo_id: str, filename: str, *args: Any, **kwargs: Any) -> str | None:
        cached.append(filename)
        return "/cache/file" if filename == "tokenizer_config.json" else None

    def not_found(url: str, *args: Any, **kwargs: Any) -> Any:
        response = httpx2.Response(404, request=httpx2.Request("HEAD", url))
        raise HfHubHTTPError("404 Client Error", response=response)

    # Cached (one of the files will do) and the hub answers: the loader gets the hub id as is.
    online.setattr(huggingface_hub, "try_to_load_from_cache", in_cache)
    online.setattr(huggingface_hub, "get_hf_file_metadata", not_found)
    assert load("org/cached") == "loaded" and calls.pop() == ("org/cached", {})
    assert cached[:2] == ["processor_config.json", "tokenizer_config.json"]
    # Cached and no network: one request, then the cache alone (no retries of files it lacks).
    asked = _asking(online)
    assert load("org/cached") == "loaded"
    assert calls.pop() == ("org/cached", {"local_files_only": True})
    assert asked == ["https://huggingface.co/org/cached/resolve/main/preprocessor_config.json"]

    def lacking(source: str, **kwargs: Any) -> Any:
        raise OSError("preprocessor_config.json is not in the cache")

    with pytest.raises(RewardError) as caught:
        from_pretrained("r", "processor", lacking, "org/cached", files=PROCESSOR_FILES)
    assert str(caught.value) == (
        "r reward option 'processor': cannot load 'org/cached' (the hub could not be reached "
        "and the hub cache lacks some of it) (OSError: preprocessor_config.json is not in the "
        "cache)"
    )
    # A local folder: nothing asked of the cache or the hub.
    online.setattr(huggingface_hub, "get_hf_file_metadata", _not_called("the hub"))
    cached.clear()
    assert load(str(tmp_path)) == "loaded" and calls.pop() == (str(tmp_path), {})
    assert cached == []
    # HF_HUB_OFFLINE: cache only, nothing asked of the hub; not cached, refused at once.
    online.setenv("HF_HUB_OFFLINE", "1")
    assert load("org/cached") == "loaded"
    assert calls.pop() == ("org/cached", {"local_files_only": True})
    online.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(RewardError) as caught:
        load("org/repo")
    assert str(caught.value) == (
        "r reward option 'processor': cannot load hub repo 'org/repo': not in the local Hugging "
        "Face cache, and HF_HUB_OFFLINE is set; download it where there is network (it is then "
        "cached) or give a local folder"
    )
    assert calls == []  # the loader (and the library it comes from) is not needed to say so
    online.delenv("HF_HUB_OFFLINE")
    # Not cached and the hub answered (here: no such file): the loader downloads and reports.
    online.setattr(huggingface_hub, "get_hf_file_metadata", not_found)
    assert load("org/repo") == "loaded" and calls.pop() == ("org/repo", {})


_OFFLINE_BUILDS = """
import sys
from dsharp.bench.detector import build_detector
from dsharp.rewards.base import RewardError
from dsharp.rewards.compositional import build_compositional_reward
from dsharp.rewards.pickscore import build_pickscore_reward

for build in (build_pickscore_reward, build_compositional_reward, build_detector):
    try:
        build(device="cpu")
    except RewardError as e:
        print(e)
print("transformers imported:", "transformers" in sys.modules)
"""


def test_offline_uncached_hub_ids_fail_before_transformers_is_imported(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE set and nothing cached the load cannot succeed: it is refused in
    one line before transformers is imported (seconds, as long again as the rest), as a
    model is. In a fresh interpreter, whose imports are its own."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_BUILDS], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    *errors, imported = result.stdout.strip().splitlines()
    tail = (
        ": not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; download it where "
        "there is network (it is then cached) or give a local folder"
    )
    assert errors == [
        f"pickscore reward option 'processor': cannot load hub repo {PICKSCORE_PROCESSOR!r}" + tail,
        f"compositional reward option 'model': cannot load hub repo {BLIP_VQA!r}" + tail,
        f"owlv2 reward option 'detector_model': cannot load hub repo {OWLV2!r}" + tail,
    ]
    assert imported == "transformers imported: False"


_OFFLINE_OPEN_CLIP_BUILDS = """
import sys
from pathlib import Path

from safetensors.torch import save_file

from dsharp.rewards.aesthetic import LinearHead, build_aesthetic_reward
from dsharp.rewards.base import RewardError
from dsharp.rewards.clip import build_clip_reward

weights = Path(sys.argv[1]) / "head.safetensors"
save_file(LinearHead(768).state_dict(), str(weights))  # the head is local: open_clip is not
builds = [
    lambda: build_clip_reward(device="cpu"),
    lambda: build_clip_reward(model="hf-hub:org/clip", device="cpu"),
    lambda: build_clip_reward(pretrained="no-such-tag", device="cpu"),
    lambda: build_aesthetic_reward(weights=str(weights), device="cpu"),
]
for build in builds:
    try:
        build()
    except RewardError as e:
        print(e)
print("open_clip imported:", "open_clip" in sys.modules)
import open_clip  # the copy of its table, loaded alone, left the package as it was

print("open_clip imports:", callable(open_clip.create_model))
"""


def test_offline_uncached_open_clip_weights_fail_before_open_clip_is_imported(
    tmp_path: Path,
) -> None:
    """With HF_HUB_OFFLINE set and a tag's weights not cached, ``clip`` and ``aesthetic``
    (whose head is a local file) are refused in one line before ``import open_clip`` (seconds:
    it imports timm, torchvision and transformers), read from open_clip's own table of tags;
    so is a tag open_clip does not know. In a fresh interpreter, whose imports are its own."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_OPEN_CLIP_BUILDS, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    *errors, imported, imports = result.stdout.strip().splitlines()
    tail = (
        ": not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; download them where "
        "there is network (they are then cached) or "
    )
    local_file = "give option 'pretrained' a local checkpoint file"
    assert errors[0] == WHAT + tail + local_file
    assert errors[1] == (
        "clip reward: open_clip model 'hf-hub:org/clip'"
        + tail
        + "give option 'model' a 'local-dir:' folder (config and weights)"
    )
    assert errors[2].startswith(
        "clip reward option 'pretrained': 'no-such-tag' is neither a checkpoint file nor a "
        "pretrained tag of 'ViT-L-14' (tags: openai, "
    )
    assert errors[3] == WHAT.replace("clip", "aesthetic", 1) + tail + local_file
    assert len(errors) == 4
    assert imported == "open_clip imported: False"
    assert imports == "open_clip imports: True"


def test_the_tag_table_read_alone_is_open_clips_own() -> None:
    """The copy loaded without open_clip's ``__init__`` answers as open_clip does, leaves no
    module behind, and open_clip itself is used where the copy cannot be loaded."""
    import sys

    from dsharp.rewards import open_clip_tags

    alone = open_clip_tags._load_alone()
    assert alone is not open_clip.pretrained and sys.modules["open_clip"] is open_clip
    assert not [name for name in sys.modules if name.startswith(open_clip_tags._ALIAS)]
    for model, tag in [("ViT-L-14", "openai"), ("ViT-H-14", "laion2b_s32b_b79k"), ("x", "y")]:
        assert alone.get_pretrained_cfg(model, tag) == open_clip.get_pretrained_cfg(model, tag)
    assert alone.list_pretrained_tags_by_model("ViT-B-32") == (
        open_clip.list_pretrained_tags_by_model("ViT-B-32")
    )
    assert open_clip_tags.pretrained_cfg("ViT-L-14", "OpenAI")["quick_gelu"] is True
    assert "openai" in open_clip_tags.pretrained_tags("ViT-L-14")


def test_a_tag_table_that_cannot_be_read_alone_is_read_from_open_clip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where open_clip's layout is not the one the copy expects, open_clip is imported:
    slower, never wrong."""
    import sys

    from dsharp.rewards import open_clip_tags

    def unknown_layout() -> Any:
        raise ImportError("no pretrained module")

    monkeypatch.setattr(open_clip_tags, "_load_alone", unknown_layout)
    monkeypatch.delitem(sys.modules, "open_clip")  # as in a fresh interpreter
    open_clip_tags._pretrained_module.cache_clear()
    try:
        assert open_clip_tags.pretrained_cfg("ViT-L-14", "openai")["quick_gelu"] is True
        assert open_clip_tags._pretrained_module() is sys.modules["open_clip"]
    finally:
        open_clip_tags._pretrained_module.cache_clear()
