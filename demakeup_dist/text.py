"""Plain text for what the commands print: durations, and tables of measurements (bench, models)."""

from __future__ import annotations

from collections.abc import Sequence


def hms(seconds: float) -> str:
    """A duration as H:MM:SS (hours not padded, not wrapped at a day)."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`rows` under `header` in left-aligned columns two spaces apart, a dashed line below the header."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
