"""The one timer of the benchmark scripts: ``torch.utils.benchmark.Timer``, at the process's thread count.

The scripts import it as ``from timing import seconds_per_call`` (Python puts the script's folder,
``benchmarks/``, on the path).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def seconds_per_call(fn: Callable[[], object], number: int = 1) -> float:
    """Mean seconds per call of ``fn()`` over ``number`` calls, measured by ``torch.utils.benchmark.Timer``.

    The Timer first makes its own warm-up calls (two for ``number`` below 200) and synchronises an
    accelerator around the measurement. It runs at ``torch.get_num_threads()`` threads, as the rest of
    the script does (the Timer's own default is one thread).
    """
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(number).mean
