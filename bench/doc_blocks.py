"""Tables a benchmark measured, written into the docs between their markers.

A block is a pair of lines, `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`. `write_block`
replaces what lies between them and keeps the rest of the page byte for byte: the prose around a
table (what it means, what to read into it) stays hand-written, the numbers and the line saying
where they were measured come from the run. The marker format and its writer are the server's
`docs_tables` (the error and settings tables use them too).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from musetalk_server.docs_tables import replace_between_markers

__all__ = ["BENCHMARKS", "LITE_ENGINE", "WRITE_DOCS_HELP", "check_block", "write_block", "measured_on"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
BENCHMARKS = DOCS / "benchmarks.md"
LITE_ENGINE = DOCS / "lite-engine.md"
WRITE_DOCS_HELP = "also write the table into its page under docs/, between its generated markers"


def check_block(page: Path, name: str) -> None:
    """Fail now, not after a long run, if `page` has no block `name` to write into."""
    write_block(page, name, body=None)


def write_block(page: Path, name: str, body: str | None) -> None:
    """Replace block `name` of the Markdown file `page` with `body`; with `body=None` only check the block."""
    text = page.read_text(encoding="utf-8")
    try:
        new = replace_between_markers(text, name, body or "")
    except ValueError as e:
        raise ValueError(f"{page}: {e}") from e
    if body is not None:
        page.write_text(new, encoding="utf-8")
        print(f"wrote block {name!r} of {page}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def measured_on() -> str:
    """When and where a run was measured, for the line above its table: the date (UTC), the CPU,
    the cores this process may use, Python, and the load average, since a busy machine reads slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {_cpu_model()}, {cores} cores, "
            f"Python {platform.python_version()}; load average {load} at the end of the run")
