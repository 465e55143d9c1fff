"""Benchmarks: T2I-CompBench, named reward benches, and the paper's reported numbers.

- :func:`run_t2i_compbench` (``dsharp eval --bench t2i-compbench``)
- :func:`run_reward_bench` (the prompt sets of ``dsharp eval --bench clip|aesthetic|...``, for
  Python callers)
- :func:`paper_table`, :func:`compare_with_paper` (``dsharp compare --against paper``)

Names are imported on first use, so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_t2i_compbench": "dsharp.bench.t2i_compbench",
    "parse_categories": "dsharp.bench.t2i_compbench",
    "load_prompt_set": "dsharp.bench.t2i_data",
    "CATEGORIES": "dsharp.bench.t2i_data",
    "SPLITS": "dsharp.bench.t2i_data",
    "T2IDataError": "dsharp.bench.t2i_data",
    "EvaluatorOptions": "dsharp.bench.t2i_scoring",
    "run_reward_bench": "dsharp.bench.reward_benches",
    "REWARD_BENCHES": "dsharp.bench.reward_benches",
    "get_reward_bench": "dsharp.bench.reward_benches",
    "paper_table": "dsharp.bench.paper",
    "compare_with_paper": "dsharp.bench.paper",
    "merge_results": "dsharp.bench.paper",
}

T2I_BENCH = "t2i-compbench"


def bench_names() -> list[str]:
    """Every bench name ``dsharp eval --bench`` can take from this package."""
    from dsharp.bench.reward_benches import REWARD_BENCHES

    return [T2I_BENCH, *REWARD_BENCHES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dsharp.bench' has no attribute {name!r}")


__all__ = ["T2I_BENCH", "bench_names", *_EXPORTS]
