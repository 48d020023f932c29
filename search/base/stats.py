"""Figures over repeated runs: mean and spread of one configuration, gain of one over another."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

CONFIDENCE = 0.95
DECIMALS = 4  # accuracies as stored and shown: float32 noise beyond this is no information


def rounded(value: float | None) -> float | None:
    """``value`` to ``DECIMALS`` places (for JSON and Optuna: a number without float noise)."""
    return None if value is None else round(value, DECIMALS)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None with fewer than 2 values)."""
    return {
        "mean": rounded(statistics.fmean(values)),
        "std": rounded(statistics.stdev(values)) if len(values) > 1 else None,
    }


def gain(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Difference of means with its 95% Welch t interval (None with fewer than 2 values each)."""
    low = high = None
    if len(values) > 1 and len(baseline) > 1:
        import warnings

        from scipy import stats

        with warnings.catch_warnings():  # identical values: scipy warns, the interval is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = stats.ttest_ind(values, baseline, equal_var=False).confidence_interval(CONFIDENCE)
        if math.isfinite(interval.low) and math.isfinite(interval.high):
            low, high = float(interval.low), float(interval.high)
    return {
        "mean": rounded(statistics.fmean(values) - statistics.fmean(baseline)),
        "low": rounded(low),
        "high": rounded(high),
        "confidence": CONFIDENCE,
        "method": "Welch t interval on the difference of means",
    }


def describe_gain(figures: dict[str, Any]) -> str:
    """``+0.0511 (95% CI +0.0400 to +0.0622)``, or just the difference without an interval."""
    text = f"{figures['mean']:+.4f}"
    if figures["low"] is not None:
        text += f" (95% CI {figures['low']:+.4f} to {figures['high']:+.4f})"
    return text


def describe_spread(values: Sequence[float]) -> str:
    """``0.6521 ± 0.0040 (3 runs)``."""
    figures = spread(values)
    std = "" if figures["std"] is None else f" ± {figures['std']:.4f}"
    return f"{figures['mean']:.4f}{std} ({len(values)} run{'s' * (len(values) != 1)})"
