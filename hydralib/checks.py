"""Argument checks shared by the modules: a bad value gets a message naming it and what is allowed."""
from __future__ import annotations

import numbers


def check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {name}={value!r}")


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """An integer (Python or numpy, not bool) in low..high."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or \
            (high is not None and value > high):
        allowed = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {allowed}, got {name}={value!r}")
