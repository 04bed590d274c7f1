"""How far a running pull (an import) has come, as the status report shows it (pure)."""

from __future__ import annotations

from typing import Any


def import_report(total: int, fetched: int, written: int, started_at: float, now: float) -> dict[str, Any]:
    """Fetched and written of total, the write rate (objects/s) and the seconds left at that rate."""
    elapsed = max(now - started_at, 1e-6)
    rate = written / elapsed
    left = (total - written) / rate if rate > 0 else None
    return {
        "total": total,
        "fetched": fetched,
        "written": written,
        "rate": round(rate, 1),
        "seconds_left": round(left, 1) if left is not None else None,
    }


def describe(report: dict[str, Any]) -> str:
    left = f", about {report['seconds_left']:.0f} s left" if report["seconds_left"] is not None else ""
    return (f"importing: {report['written']} of {report['total']} written ({report['fetched']} fetched), "
            f"{report['rate']:.0f}/s{left}")
