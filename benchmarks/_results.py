"""Where benchmarks put their figures, and how they print them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def rounded(values: list[float], digits: int = 3) -> dict[str, float]:
    """:func:`summary` with every figure rounded to ``digits``."""
    return {k: round(v, digits) for k, v in summary(values).items()}


def write(name: str, figures: dict[str, Any]) -> Path:
    """Write ``figures`` to results/<name>.json with when and where they were measured, and print them."""
    RESULTS_DIR.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "kernel": platform.release()},
        "figures": figures,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"written to {path}")
    return path


def _cpus() -> int:
    return len(os.sched_getaffinity(0))
