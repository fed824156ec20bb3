"""Benchmark conventions: Fathom and its peer timed in the same run, the ratio reported.

Each comparison is one pytest-benchmark *group*. Every benchmark in it sets
``benchmark.extra_info["role"]`` to ``"fathom"`` or ``"peer"``; the Fathom one may set
``extra_info["goal"]`` (the speed-up over the peer the issue asks for, e.g. ``30``) and
``extra_info["unit"]``/``extra_info["items"]`` for a throughput (items per call). At the end
of the run a table prints, per group, the medians, the ratio peer/fathom and whether the
goal is met. Medians exclude compilation: kernels are warmed before timing.

A measurement with no peer (e.g. real-time factor) sets ``extra_info["summary"]`` to a
callable taking the median seconds and returning the line to print.
"""

from __future__ import annotations

import pytest

import engine
import formats


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    engine.warmup()
    formats.warmup()


def _rows(config) -> list[tuple]:
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return []
    groups: dict[str, list] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or bench.name, []).append(bench)
    rows = []
    for group, benches in sorted(groups.items()):
        fathom = [b for b in benches if b.extra_info.get("role") == "fathom"]
        peers = [b for b in benches if b.extra_info.get("role") == "peer"]
        for f in fathom:
            for p in peers or [None]:
                if not getattr(f, "stats", None) or (p is not None and not getattr(p, "stats", None)):
                    continue
                fm = f.stats.median
                pm = None if p is None else p.stats.median
                ratio = None if pm is None else pm / fm
                goal = f.extra_info.get("goal")
                items = f.extra_info.get("items")
                rate = f"{items / fm / 1e6:.2f} M{f.extra_info.get('unit', 'items')}/s" if items else ""
                rows.append((group, f.name, fm, None if p is None else p.name, pm, ratio, goal, rate))
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows = _rows(config)
    session = getattr(config, "_benchmarksession", None)
    extra = [
        f"{b.group or b.name}: {b.extra_info['summary'](b.stats.median)}"
        for b in (session.benchmarks if session else [])
        if callable(b.extra_info.get("summary")) and getattr(b, "stats", None)
    ]
    if not rows and not extra:
        return
    tr = terminalreporter
    tr.section("Fathom vs peer (medians, same run)")
    for line in extra:
        tr.write_line(line)
    for group, fname, fm, pname, pm, ratio, goal, rate in rows:
        line = f"{group}: {fname} {fm * 1e3:.3f} ms"
        if pm is not None:
            line += f" | {pname} {pm * 1e3:.3f} ms | ratio {ratio:.1f}x"
        if goal is not None and ratio is not None:
            line += f" (goal >= {goal}x: {'met' if ratio >= goal else 'NOT met'})"
        if rate:
            line += f" | {rate}"
        tr.write_line(line)
