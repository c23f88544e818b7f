"""What a benchmark group returns: rows of (ours, alternatives, ratio, target).

Values are stored in the row's display unit (``ns``, ``µs``, ``ms``, ``/s``), so
the JSON output and the table agree without conversions.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Seconds per display unit; "/s" rows hold rates, so no scaling.
UNIT_SCALE: dict[str, float] = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "/s": 1.0}


@dataclass(frozen=True)
class Stats:
    """Median and range of ``repeats`` samples; each sample averages ``number`` operations."""

    median: float
    low: float
    high: float
    repeats: int
    number: int = 1

    @classmethod
    def of(cls, samples: Sequence[float], *, number: int = 1) -> Stats:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples), number)

    def scaled(self, factor: float) -> Stats:
        """The same statistics multiplied by ``factor`` (seconds -> display unit)."""
        return Stats(self.median * factor, self.low * factor, self.high * factor, self.repeats, self.number)

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "repeats": self.repeats,
            "number": self.number,
        }


def in_unit(seconds: Stats, unit: str) -> Stats:
    """Convert per-operation seconds to ``unit``."""
    return seconds.scaled(1.0 / UNIT_SCALE[unit])


@dataclass(frozen=True)
class Measure:
    """One labelled figure. ``stats`` is None when it could not be measured (see ``note``)."""

    label: str
    stats: Stats | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "stats": None if self.stats is None else self.stats.to_json(),
            "note": self.note or None,
        }


def skipped(label: str, why: str) -> Measure:
    return Measure(label, None, f"skipped: {why}")


@dataclass
class Row:
    """One line of the figures table.

    ``ratio_to`` names the alternative the ratio is taken against (ours / that);
    ``met`` is the group's own judgement of ``target`` (None: no target).
    """

    group: str
    figure: str
    unit: str
    ours: Measure | None
    alternatives: list[Measure] = field(default_factory=list)
    ratio_to: str | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def reference(self) -> Measure | None:
        for alt in self.alternatives:
            if alt.label == self.ratio_to:
                return alt
        return None

    def ratio(self) -> float | None:
        ref = self.reference()
        if self.ours is None or self.ours.stats is None or ref is None or ref.stats is None:
            return None
        if ref.stats.median == 0:
            return None
        return self.ours.stats.median / ref.stats.median

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "figure": self.figure,
            "unit": self.unit,
            "ours": None if self.ours is None else self.ours.to_json(),
            "alternatives": [alt.to_json() for alt in self.alternatives],
            "ratio": self.ratio(),
            "ratio_to": self.ratio_to,
            "target": self.target or None,
            "met": self.met,
            "note": self.note or None,
        }
