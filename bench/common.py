"""What every benchmark shares: logging, child-process measurements, the printed table, results."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: Where benchmarks cache their input (``data/``) and write their results; git ignores it.
OUT = REPO / "bench" / "out"
DATA = OUT / "data"
#: Above this share of the CPUs kept busy by other processes during a run, its time is suspect.
DISTURBED = 0.10


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """This process's own peak RSS in MiB: ``VmHWM`` of its memory map.

    Not ``ru_maxrss``: a child started by ``subprocess`` (vfork, then exec) inherits the parent's
    peak RSS in ``ru_maxrss``, so a parent that once held 500 MiB would make every child report at
    least that much. ``VmHWM`` counts only the memory this program touched after exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_busy_seconds() -> float:
    """CPU seconds all processes on this machine have spent busy since boot (from /proc/stat)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def other_load(busy_before: float, wall: float, usage: Any) -> float:
    """Share of the machine's CPUs that processes other than the child kept busy meanwhile."""
    child = usage.ru_utime + usage.ru_stime
    other = cpu_busy_seconds() - busy_before - child
    return max(0.0, other / (wall * (os.cpu_count() or 1)))


def disturbed(results: list[dict]) -> list[str]:
    """A warning per run during which other processes kept the CPUs noticeably busy."""
    return [
        f"warning: other processes kept {r['other_load']:.0%} of the CPUs busy during the "
        f"{r['engine']} run: its time is slower than on a quiet machine"
        for r in results
        if r.get("other_load", 0.0) > DISTURBED
    ]


def text_table(head: list[str], lines: list[list[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; the ``right`` columns (numbers) right-aligned."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]

    def row(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([row(head), rule, *(row(line) for line in lines)])


def code_version(*paths: str) -> dict[str, Any]:
    """The commit checked out and a sha256 of each measured module (which may differ from it)."""
    found: dict[str, Any] = {}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        found["commit"] = head.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["commit"] = None
    for path in paths:
        found[path] = hashlib.sha256((REPO / path).read_bytes()).hexdigest()
    return found


def write_results(path: Path, benchmark: str, threads: int, **fields: Any) -> None:
    """The run's results as JSON, with when and on what machine it ran."""
    document = {
        "benchmark": benchmark,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": threads,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **fields,
    }
    path.write_text(json.dumps(document, indent=2, default=str))
    log(f"wrote {path}")


def measured_cells(result: dict) -> list[str]:
    """seconds, rows/s and peak RSS of one run, as table cells."""
    return [
        f"{result['seconds']:.2f}",
        f"{result['rows_per_s']:,.0f}",
        f"{result['peak_rss_mib']:,.0f}",
    ]


def verdict_cells(ratio: float | None, target: float, met: bool | None) -> list[str]:
    """ratio, target and whether it was met, as table cells (blank for the reference row)."""
    if ratio is None:
        return ["", "", ""]
    return [f"{ratio:.2f}x", f">= {target:.1f}x", "yes" if met else "NO"]


def run_worker(module: str, args: list[str], tag: str, result: Path) -> dict:
    """Run ``python -m <module> --worker <args>`` in its own process (polars on THREADS threads)
    and return the JSON it wrote to ``result``, with its wall seconds and the share of the CPUs
    other processes kept busy meanwhile."""
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", module, "--worker", *args]
    env = os.environ | {"POLARS_MAX_THREADS": "2"}
    log(f"{tag} running…")
    busy = cpu_busy_seconds()
    start = datetime.now(UTC)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    wall = (datetime.now(UTC) - start).total_seconds()
    if code != 0 or not result.exists():
        raise SystemExit(f"{tag} failed (exit {code})")
    found = json.loads(result.read_text())
    result.unlink()
    found |= {"child_wall_seconds": wall, "other_load": other_load(busy, wall, usage)}
    log(
        f"{tag} {found['seconds']:.1f}s, peak RSS {found['peak_rss_mib']:,.0f} MiB, other "
        f"processes kept {found['other_load']:.0%} of the CPUs busy"
    )
    return found
