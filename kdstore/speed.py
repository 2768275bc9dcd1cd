"""CPU speed of a trained model: one-at-a-time latency (p50/p99) and batch throughput.

Measured once at the end of a teach or distill stage, on the CPU whatever the training device, so
``kd report`` can put every model of a run side by side. Benchmarks with repeats and medians live
in ``bench/``; these are single measurements for orientation.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

import numpy as np


def speed_texts(samples, limit: int = 1000) -> list[str]:
    """The texts to time: test, else dev, else any samples (a ``SampleSet``)."""
    return [samples.texts[i] for i in speed_rows(samples, limit)]


def speed_rows(samples, limit: int = 1000) -> np.ndarray:
    """The positions in ``samples`` of ``speed_texts``' texts."""
    for split in ("test", "dev"):
        rows = np.flatnonzero(np.asarray([s == split for s in samples.splits], dtype=bool))
        if len(rows):
            return rows[:limit]
    return np.arange(min(len(samples.texts), limit))


def measure(
    logits_fn: Callable[[list[str], int], np.ndarray],
    texts: Sequence[str],
    *,
    single: int = 100,
    batch: int = 1000,
    batch_size: int = 256,
) -> dict[str, float]:
    """``logits_fn(texts, batch_size)`` timed on ``single`` texts one at a time and ``batch`` texts in batches."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        return {}
    logits_fn(texts[:2], 1)  # warm-up: first calls allocate
    one = texts[:single]
    latencies = []
    for t in one:
        start = time.perf_counter()
        logits_fn([t], 1)
        latencies.append((time.perf_counter() - start) * 1000.0)
    many = (list(texts) * (batch // len(texts) + 1))[:batch]
    start = time.perf_counter()
    logits_fn(many, batch_size)
    elapsed = time.perf_counter() - start
    figures = {
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p99_ms": float(np.percentile(latencies, 99)),
        "throughput_samples_per_s": len(many) / max(elapsed, 1e-9),
        # (what they are of: a p99 of 20 texts is about their slowest, and a throughput of 20 texts repeated to fill
        # 1,000 reads its cache warm; the report says so)
        "latency_texts": len(one),
        "throughput_texts": min(len(texts), len(many)), "throughput_of": len(many),
    }
    torch = sys.modules.get("torch")  # the CPU threads they were timed with (a report beside another's says it)
    if torch is not None:
        figures["speed_threads"] = float(torch.get_num_threads())
    return figures
