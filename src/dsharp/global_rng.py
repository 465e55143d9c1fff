"""The process's global random streams (Python's, numpy's, torch's), kept across a call that
seeds them: training seeds them all from ``train.seed`` (accelerate's ``set_seed``), which in
a notebook or script silently replaced the caller's own seeded streams."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def global_rngs_kept() -> Iterator[None]:
    """Python's, numpy's and torch's CPU generators (and CUDA's, where already in use, and
    Apple's MPS one, where there is one) are as they were on entry when the block leaves, by
    return or exception."""
    import numpy as np
    import torch

    python_state = random.getstate()
    numpy_state = np.random.get_state()
    available = torch.cuda.is_available()
    cuda = available and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    # CUDA not yet in use: torch.manual_seed only queued its seed, which a first use takes;
    # the block's first use (training) seeds CUDA itself, so that queued seed is put back
    queued = torch.initial_seed()
    # torch.manual_seed (training's) seeds MPS at once, and fork_rng forks one device type only
    mps_state = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    with torch.random.fork_rng(devices=devices):  # torch's CPU and those CUDA devices
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            if available and not cuda and torch.cuda.is_initialized():
                torch.cuda.manual_seed_all(queued)
            if mps_state is not None:
                torch.mps.set_rng_state(mps_state)
