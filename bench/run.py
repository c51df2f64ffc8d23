"""Run every vidgate benchmark, print one table, and write it (with the date and machine) to bench/RESULTS.md.

Benchmarks: the API benchmarks in `api_bench.py` (retrieve polling, queue rate, queue-to-start latency) and,
when it can be imported, `render_bench.measure()` (needs the ffmpeg CLI). Each one measures vidgate beside
its reference in the same run. Servers are subprocesses on free loopback ports with temporary data dirs,
always torn down.

Run:  .venv/bin/python bench/run.py                      (everything, ~2-3 min on 2 cores)
      .venv/bin/python bench/run.py --only queue --no-write
Exit status: 0 when every benchmark ran (a missed target is shown in the table), 1 when one errored, and
with --strict also 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import api_bench  # noqa: E402

RESULTS = BENCH_DIR / "RESULTS.md"
BEGIN, END = "<!-- bench:begin (written by bench/run.py; edit outside these markers) -->", "<!-- bench:end -->"
NAMES = ["retrieve", "queue", "queue_to_start", "render", "probe", "upscale", "diffusers", "gateway"]

Row = dict[str, Any]


def module_measure(module_name: str) -> Callable[[], list[Row]]:
    """`measure()` of a bench module beside this one, skipped with a note when it cannot run here."""

    def measure() -> list[Row]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"[run] {module_name} not importable ({exc}); skipped", file=sys.stderr)
            return []
        rows = module.measure()
        if not rows:
            print(f"[run] {module_name} returned no rows (is the ffmpeg CLI installed?)", file=sys.stderr)
        return rows

    return measure


def benchmarks(duration: float) -> list[tuple[str, Callable[[], list[Row]]]]:
    return [
        ("retrieve", lambda: api_bench.bench_retrieve(duration=duration)),
        ("queue", lambda: api_bench.bench_queue(duration=duration)),
        ("queue_to_start", api_bench.bench_queue_to_start),
        ("render", module_measure("render_bench")),
        ("probe", module_measure("probe_bench")),
        ("upscale", module_measure("upscale_bench")),
        ("diffusers", module_measure("diffusers_bench")),
        ("gateway", module_measure("gateway_bench")),
    ]


def fmt_number(value: Any, unit: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def fmt_target(target: Any) -> str:
    if target is None:
        return ""
    if isinstance(target, int | float):  # render_bench's convention: ratio must not exceed it
        return f"ratio ≤ {target:g}"
    return str(target)


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        unit = r.get("unit", "")
        ratio = r.get("ratio")
        out.append([
            str(r["name"]),
            fmt_number(r.get("value"), unit),
            fmt_number(r.get("reference"), unit),
            "" if ratio is None else f"{ratio:g}",
            fmt_target(r.get("target")),
            "yes" if r.get("ok") else "NO",
        ])
    return out


HEADERS = ["benchmark", "value", "reference", "ratio", "target", "ok"]


def print_table(rows: list[Row]) -> None:
    cells = table_rows(rows)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
        print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        return
    table = Table(*HEADERS, title="vidgate benchmarks")
    for c in cells:
        style = None if c[-1] == "yes" else "bold red"
        table.add_row(*c, style=style)
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for c in table_rows(rows):
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in c) + " |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        uname = " ".join(platform.uname())
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        text = (out.stdout or out.stderr).strip()
        wrk_version = text.splitlines()[0].split(" Copyright")[0] if text else wrk
    return {
        "uname": uname,
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "wrk": wrk_version or "not installed (asyncio load generator used)",
    }


def write_results(path: Path, rows: list[Row], errors: list[str], command: str, started: dt.datetime,
                  seconds: float) -> None:
    info = machine()
    section = [
        BEGIN,
        "## Latest run",
        "",
        f"- Date (UTC): {started.strftime('%Y-%m-%d %H:%M:%S')} (took {seconds:.0f} s)",
        f"- Machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}, {info['cores']} cores; Python {info['python']}; load generator: {info['wrk']}",
        f"- Command: `{command}`",
        "",
        markdown_table(rows),
    ]
    if errors:
        section += ["", "Errors:", "", *(f"- {e}" for e in errors)]
    section += [END]
    block = "\n".join(section)
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = "# vidgate benchmark results\n\n" + block + "\n" + (("\n" + text) if text else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=NAMES, action="append", help="run only these (repeatable)")
    parser.add_argument("--skip", choices=NAMES, action="append", default=[], help="skip these (repeatable)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each load run (default 10)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to write (default bench/RESULTS.md)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    t0 = dt.datetime.now().timestamp()
    rows: list[Row] = []
    errors: list[str] = []
    for name, fn in benchmarks(args.duration):
        if (args.only and name not in args.only) or name in args.skip:
            continue
        print(f"[run] {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(fn())
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            rows.append({"name": name, "value": "error", "unit": "", "reference": None, "ratio": None,
                         "target": None, "ok": False})
    seconds = dt.datetime.now().timestamp() - t0

    print_table(rows)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not args.no_write:
        argv_shown = sys.argv if argv is None else [sys.argv[0], *argv]
        exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
        command = shlex.join([exe, os.path.relpath(Path(argv_shown[0]).resolve(), ROOT), *argv_shown[1:]])
        write_results(args.results, rows, errors, command, started, seconds)
        print(f"wrote {args.results}", file=sys.stderr)
    if errors:
        return 1
    if args.strict and not all(r.get("ok") for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
