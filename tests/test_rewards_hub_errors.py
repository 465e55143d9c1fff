"""Hub weights that are not cached, on a machine with no network: one clear line, at once.

Without ``HF_HUB_OFFLINE``, one request without the hub client's retries finds the hub
unreachable (instead of about 25 s of retries a file and their warnings), and the line says
how to work offline. No test touches the network: the hub client's functions are replaced.
"""

from __future__ import annotations

from typing import Any

import httpx2
import huggingface_hub
import pytest

from dsharp.rewards.base import RewardError

NO_DNS = "[Errno -2] Name or service not known"


def _not_called(what: str):
    def fail(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"{what} was called")

    return fail


def _no_dns(*args: Any, **kwargs: Any) -> Any:
    raise httpx2.ConnectError(NO_DNS)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """HF_HUB_OFFLINE unset and nothing in the hub cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    return monkeypatch


def test_hub_checkpoints_of_other_rewards_fail_at_once_without_network(
    online: pytest.MonkeyPatch,
) -> None:
    from dsharp.rewards._weights import hub_unreachable
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
    assert hub_unreachable("not a repo id", "x.bin") is None  # the download's error to report
