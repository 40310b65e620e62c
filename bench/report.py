# -*- test-case-name: tests.test_bench,tests.integration.test_bench -*-
"""
The benchmark's results: the samples of every row for every proxy, their
medians, ranges and ratios to the baseline proxy, as a text table and as
JSON.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """
    One figure, measured for every route.

    @ivar key: Its name in the JSON file.
    @ivar label: Its name in the table.
    @ivar unit: The unit of every sample.
    @ivar higherIsBetter: Whether a larger figure is better (throughput)
        or worse (latency, CPU, memory).
    @ivar samples: Route name to its samples, in the order taken.
    """

    key: str
    label: str
    unit: str
    higherIsBetter: bool
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, route: str, value: float) -> None:
        """
        Record one sample for C{route}.
        """
        self.samples.setdefault(route, []).append(value)

    def median(self, route: str) -> float | None:
        """
        The median of C{route}'s samples, or L{None} without samples.
        """
        values = self.samples.get(route)
        return statistics.median(values) if values else None

    def ratio(self, route: str, baseline: str | None) -> float | None:
        """
        C{route}'s median divided by the baseline's, or L{None} when either
        is missing or the baseline's is 0.
        """
        if baseline is None:
            return None
        mine, theirs = self.median(route), self.median(baseline)
        if mine is None or theirs is None or theirs == 0:
            return None
        return mine / theirs

    def toJSON(self, baseline: str | None) -> dict[str, Any]:
        """
        The row for the JSON file.
        """
        results = {
            route: {
                "median": self.median(route),
                "min": min(values),
                "max": max(values),
                "samples": values,
                "ratio": self.ratio(route, baseline),
            }
            for route, values in self.samples.items()
            if values
        }
        return {
            "label": self.label,
            "unit": self.unit,
            "higherIsBetter": self.higherIsBetter,
            "results": results,
        }


def _fmt(value: float | None) -> str:
    """
    Format a figure with three significant digits or more, or a dash.
    """
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def formatRow(row: Row, routes: list[str], baseline: str | None) -> list[str]:
    """
    Render one row: a title line, then one line per route with samples.
    """
    better = "higher" if row.higherIsBetter else "lower"
    lines = [f"{row.label} ({row.unit}, {better} is better)"]
    for route in routes:
        values = row.samples.get(route)
        if not values:
            continue
        spread = f"[{_fmt(min(values))} .. {_fmt(max(values))}]"
        ratio = row.ratio(route, baseline)
        shown = "" if ratio is None else f"{ratio:6.2f} x {baseline}"
        lines.append(f"  {route:<22}{_fmt(row.median(route)):>10}  {spread:<24}{shown}")
    return lines


def formatTable(report: dict[str, Any], rows: list[Row]) -> str:
    """
    Render the whole report as text.
    """
    routes = list(report["proxies"])
    baseline = report["baseline"]
    lines = [
        "connectproxy benchmark: " + report["config"]["summary"],
        "median of the samples, [min .. max], and the median's ratio to "
        + (baseline or "(no baseline)"),
        "",
    ]
    for row in rows:
        if any(row.samples.values()):
            lines += [*formatRow(row, routes, baseline), ""]
    for name, proxy in report["proxies"].items():
        if proxy["kind"] == "direct":
            continue
        start = proxy.get("pssAtStartKiB")
        memory = "" if start is None else f"; PSS after start {start / 1024:.1f} MiB"
        lines.append(
            f"{name}: {proxy['version']}{memory}; exit status {proxy['exitStatus']}"
        )
        for check in proxy.get("checks", []):
            lines.append("  " + check)
    for title, key in (("PROBLEMS", "problems"), ("warnings", "warnings")):
        if report[key]:
            lines += ["", title + ":"] + ["  " + entry for entry in report[key]]
    return "\n".join(lines)
