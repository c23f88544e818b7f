"""``--plot FILE.png``: the curves a group measured (cost against pool size), drawn with matplotlib.

A group that measures a curve appends a ``Curve`` to ``ctx.curves``; after the
run, ``draw`` puts every curve in one PNG: a row of panels per curve, one panel
per unit (ms, µs, %), each point the median with its [min-max] as an error bar,
on a log-2 x axis. matplotlib is the optional ``plot`` extra: it is imported only
here, only when asked, and its absence is a one-line note, not a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.figures import Stats


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (x, stats) in ``unit``; a reference is drawn dashed."""

    label: str
    unit: str
    points: list[tuple[float, Stats]]
    reference: bool = False


@dataclass
class Curve:
    title: str
    x_label: str
    panel_titles: dict[str, str]  # unit -> what that panel shows
    series: list[Series] = field(default_factory=list)

    def units(self) -> list[str]:
        seen: list[str] = []
        for s in self.series:
            if s.unit not in seen:
                seen.append(s.unit)
        return seen


def draw(curves: Sequence[Curve], path: Path, subtitle: str = "") -> str:
    """Write ``curves`` to ``path`` (PNG); returns a one-line account of what happened."""
    if not curves:
        return f"--plot: none of the groups that ran measures a curve (scale does); {path} not written"
    try:
        import matplotlib
    except ImportError:
        return (
            "--plot: matplotlib is not installed (the `plot` extra: pip install -e '.[plot]'); "
            f"{path} not written"
        )
    matplotlib.use("Agg")  # no display needed, and no window opened on one
    import matplotlib.pyplot as plt

    columns = max(len(curve.units()) for curve in curves)
    fig, axes = plt.subplots(len(curves), columns, figsize=(4.6 * columns, 3.8 * len(curves)), squeeze=False)
    for row, curve in enumerate(curves):
        units = curve.units()
        for column in range(columns):
            ax = axes[row][column]
            if column >= len(units):
                ax.set_visible(False)
                continue
            unit = units[column]
            xs: set[float] = set()
            for s in (s for s in curve.series if s.unit == unit):
                x = [point[0] for point in s.points]
                medians = [point[1].median for point in s.points]
                below = [point[1].median - point[1].low for point in s.points]
                above = [point[1].high - point[1].median for point in s.points]
                ax.errorbar(
                    x,
                    medians,
                    yerr=[below, above],
                    label=s.label,
                    marker="o",
                    markersize=4,
                    capsize=3,
                    linestyle="--" if s.reference else "-",
                    alpha=0.6 if s.reference else 1.0,
                )
                xs.update(x)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(xs), [f"{x:g}" for x in sorted(xs)])
            ax.set_ylim(bottom=0)
            ax.set_xlabel(curve.x_label)
            ax.set_ylabel(unit)
            panel = curve.panel_titles.get(unit, unit)
            ax.set_title(panel if len(curves) == 1 else f"{curve.title}: {panel}", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    heading = curves[0].title if len(curves) == 1 else ""
    if heading or subtitle:
        fig.suptitle("\n".join(filter(None, [heading, subtitle])), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"--plot: {sum(len(c.series) for c in curves)} series of {len(curves)} curve(s) drawn to {path}"
