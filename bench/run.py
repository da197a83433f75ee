"""The runner: runs each figure module and rewrites bench/RESULTS.md (bench/out/RESULTS-quick.md
with --quick).

    python -m bench.run [--quick] [--only http_me,queries] [--output PATH]

To add a figure (usage, settlement, subscriptions, ...): write bench/<name>.py with a TITLE and a
`run(cfg: Config) -> Section` (sync or async), measure its floor in the same run, and add the
module's name to FIGURES. The runner times it, catches its failure and puts its rows in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_DIR, OUT_DIR, Config, Section, load_average, machine, wrk_version

FIGURES = [
    "http_me",
    "queries",
    "usage",         # recordUsage over HTTP, the bulk import, a loaded period (issue 5)
    "close_period",  # closePeriod on a loaded period (issue 6)
    "subscriptions", # WebSocket fan-out of settlementUpdated (issue 7)
    "heavy_steps",   # the longest step the largest requests hold the event loop (issue 22)
]


def run_figure(name: str, cfg: Config) -> Section:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    try:
        result = module.run(cfg)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
    except Exception:  # noqa: BLE001 - one failing figure must not hide the others
        section = Section(getattr(module, "TITLE", name), "", notes=["**FAILED**:\n\n```\n" + traceback.format_exc() + "```"])
    else:
        section = result
    section.seconds = time.perf_counter() - started
    return section


def render(sections: list[Section], info: dict[str, str], cfg: Config, total: float, command: str) -> str:
    lines = [
        "# Shareflow benchmark results",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {total:.0f} s"
        + (" (quick sizes)." if cfg.quick else "."),
        "Every figure is paired with a floor measured in the same run on the same machine; the ratio is what travels.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info.items()],
        f"| load average at end | {load_average()} |",
        "",
        "## Summary",
        "",
        "| figure | size | measured | floor (same run) | ratio | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for section in sections:
        for row in section.rows:
            lines.append(f"| {row.figure} | {row.size} | {row.measured} | {row.floor} | {row.ratio} | {row.note} |")
    for section in sections:
        lines += ["", f"## {section.title}", "", f"_{section.seconds:.0f} s._ {section.method}".rstrip(), ""]
        lines += [f"- {note}" if not note.startswith("**FAILED**") else note for note in section.notes]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and durations (under 2 minutes)")
    parser.add_argument("--only", help="comma-separated figure modules, e.g. http_me,queries")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else FIGURES
    output = args.output or (OUT_DIR / "RESULTS-quick.md" if args.quick else BENCH_DIR / "RESULTS.md")
    if args.only and not args.output:
        output = OUT_DIR / f"RESULTS-{'-'.join(names)}{'-quick' if args.quick else ''}.md"
    command = "make bench-quick" if args.quick else "make bench"
    if args.only:
        command = f"python -m bench.run {'--quick ' if args.quick else ''}--only {args.only}"

    info = machine()
    started = time.perf_counter()
    sections = []
    with tempfile.TemporaryDirectory(prefix="shareflow-bench-") as tmp:
        for name in names:
            print(f"[bench] {name} ...", flush=True)
            sub = Path(tmp) / name
            sub.mkdir()
            section = run_figure(name, Config(quick=args.quick, workdir=sub))
            print(f"[bench] {name}: {section.seconds:.1f} s", flush=True)
            for row in section.rows:
                print(f"    {row.figure} | {row.size} | {row.measured} | {row.floor} | {row.ratio} | {row.note}", flush=True)
            for note in section.notes:
                if note.startswith("**FAILED**"):
                    print(note, flush=True)
            sections.append(section)
    total = time.perf_counter() - started
    info["wrk"] = wrk_version()  # read again: the HTTP figures install wrk where it was absent
    OUT_DIR.mkdir(exist_ok=True)
    output.write_text(render(sections, info, Config(args.quick, Path(tmp)), total, command))
    print(f"[bench] wrote {output} in {total:.0f} s", flush=True)
    print(output.read_text(), flush=True)


if __name__ == "__main__":
    main()
