"""Does the test suite stay green when the machine is busy? The whole suite, N times, beside a CPU hog.

A test that waits on a sleep instead of on readiness passes on a quiet machine and fails on a loaded
one (the embedded graph server's start once did). So this runs `pytest -q` `--runs` times in a row
while `--hogs` processes spin at 100 % CPU, and records each run's outcome, counts and duration.
It counts as green only if every run passes.

Usage: python -m kgreport.benchmarks.suite_under_load [--runs 3] [--hogs 2] [-- PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import subprocess
import sys
import time
from typing import Any

from kgreport.benchmarks.results_io import RESULTS, write_result

_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def _spin() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def run_suite(pytest_args: list[str]) -> dict[str, Any]:
    """One `pytest -q` run: return code, the summary's counts and the wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _SUMMARY.findall(tail)}
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"returncode": done.returncode, "seconds": round(seconds, 1), "counts": counts, "failures": failures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=2, help="processes spinning at 100 %% CPU beside the suite")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    runs = []
    try:
        for n in range(1, args.runs + 1):
            result = run_suite(args.pytest_args)
            runs.append(result)
            print(f"run {n}/{args.runs}: rc {result['returncode']}, {result['counts']}, {result['seconds']} s")
            for line in result["failures"]:
                print(f"  {line}")
    finally:
        for hog in hogs:
            hog.terminate()
    green = sum(r["returncode"] == 0 for r in runs)
    print(f"green under load: {green} of {len(runs)} (with {args.hogs} CPU hogs)")
    write_result(
        RESULTS / "suite_under_load.json",
        {"runs": runs, "green": green, "of": len(runs), "hogs": args.hogs, "pytest_args": args.pytest_args},
    )


if __name__ == "__main__":
    main()
