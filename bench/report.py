"""Where the benchmarks' tables go: printed, and with --write, into their block of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def publish(table: str, block: str, write: bool) -> None:
    """Print ``table``; with ``write``, replace the text between ``<!-- {block}:start -->`` and
    ``<!-- {block}:end -->`` in docs/benchmarks.md with it."""
    print()
    print(table)
    if not write:
        return
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = REPORT.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{REPORT} has no {start} ... {end} block to write the table into")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    REPORT.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    print(f"\n{REPORT.name} updated.")
