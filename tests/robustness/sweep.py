"""The robustness sweep: every trained-model finding of the book, over seeds and numerical settings.

A finding that depends on training or on random noise is a claim about a procedure, not about one
run: another CPU rounds differently, and a training run close to failing becomes another model.
This script runs each finding of :mod:`findings` for every seed under every numerical setting of
:data:`SETTINGS` (each setting in its own process, since the variables are read when the libraries
load) and prints, per claim, the worst margin seen: how far the least favourable run stayed on the
right side of the bar that the book asserts. A negative worst margin is a claim that fails somewhere.

    .venv/bin/python tests/robustness/sweep.py                    # every finding, seeds 0-9
    .venv/bin/python tests/robustness/sweep.py --only polarity --seeds 0-4 --settings native,omp1

``make test-robustness`` runs it in full (hours on two cores; not part of ``make test``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Setting name -> environment variables. Each changes the rounding of training on a machine with
#: AVX-512: oneDNN's convolution kernels, ATen's vector kernels, the thread count, and a whole AVX2
#: machine (oneDNN, ATen, NumPy's dispatch and OpenBLAS's kernels at once).
SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "omp1": {"OMP_NUM_THREADS": "1"},
    "avx2-machine": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Haswell",
    },
}


def seeds_from(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` -> a list of ints."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-9", help="seeds, '0-9' or '0,3,5' (default 0-9)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--only", default="", help="comma-separated findings (substrings of their names)")
    parser.add_argument("--out", default="_build/robustness.jsonl", help="JSON lines, one per (finding, seed, setting)")
    parser.add_argument("--table", metavar="LOG", help="print the table of an earlier run's log and stop")
    parser.add_argument("--resume", action="store_true", help="skip the (finding, seed, setting) runs already in --out")
    parser.add_argument("--skip", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print_table([json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()])
        return
    seeds = seeds_from(args.seeds)
    if args.worker:
        sys.path.insert(0, str(HERE))
        from findings import run_findings

        run_findings(args.only, seeds, {tuple(k.split("|")) for k in args.skip.split(";") if k})
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = (
        [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        if args.resume and out.exists()
        else []
    )
    with out.open("a") as log:
        for setting in args.settings.split(","):
            env = dict(os.environ, **SETTINGS[setting], PYTHONHASHSEED="0")
            # One thread per process: two processes share the two cores without oversubscribing them.
            workers = 2 if SETTINGS[setting].get("OMP_NUM_THREADS") == "1" and len(seeds) > 1 else 1
            shares = [",".join(map(str, seeds[k::workers])) for k in range(workers)]
            start = time.perf_counter()
            skip = ";".join(f"{r['finding']}|{r['seed']}" for r in records if r["setting"] == setting)
            procs = [
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", "--seeds", share, "--only", args.only, "--skip", skip],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for share in shares
            ]
            lines = queue.Queue()
            readers = [
                threading.Thread(target=lambda p=p: [lines.put(line) for line in p.stdout] + [lines.put(None)])
                for p in procs
            ]
            for reader in readers:
                reader.start()
            finished = 0
            while finished < len(procs):
                line = lines.get()
                if line is None:
                    finished += 1
                    continue
                if not line.startswith("{"):
                    print(line, end="")
                    continue
                record = json.loads(line) | {"setting": setting}
                if not record["claims"]:
                    continue
                records.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                worst = min((c["margin"] for c in record["claims"].values() if c["op"] != "="), default=float("nan"))
                print(
                    f"  {setting:<13} seed {record['seed']:<3} {record['finding']:<40} worst margin {worst:+.3f}",
                    flush=True,
                )
            if any(p.wait() for p in procs):
                raise SystemExit(f"a worker for {setting} failed")
            print(f"{setting}: {time.perf_counter() - start:.0f} s", flush=True)
    print_table(records)


def print_table(records: list[dict]) -> None:
    """Per claim: the runs, the range of values, the bar and the worst margin (with where it happened)."""
    rows: dict[tuple[str, str], list[tuple[float, float, str, float, str]]] = {}
    measured: dict[tuple[str, str], list[float]] = {}
    for r in records:
        for claim, c in r["claims"].items():
            if c["op"] == "=":  # recorded, not claimed
                measured.setdefault((r["finding"], claim), []).append(c["value"])
                continue
            rows.setdefault((r["finding"], claim), []).append(
                (c["margin"], c["value"], c["op"], c["bar"], f"seed {r['seed']}, {r['setting']}")
            )
    print(f"\n{'finding':<40}{'claim':<46}{'runs':>5}  {'values':<17}{'bar':<9}{'worst margin':<13}where")
    failing = 0
    for (finding, claim), runs in rows.items():
        worst = min(runs)
        values = [v for _, v, *_ in runs]
        failing += worst[0] <= 0
        print(
            f"{finding:<40}{claim:<46}{len(runs):>5}  {min(values):7.3f}..{max(values):<7.3f} "
            f"{worst[2]}{worst[3]:<7.3g} {worst[0]:+.3f}{'  FAILS' if worst[0] <= 0 else '':<7} {worst[4]}"
        )
    print(f"\n{len(rows)} claims, {failing} with a run on the wrong side of its bar")
    if measured:
        print("\nmeasured, not claimed:")
        for (finding, name), values in measured.items():
            print(f"{finding:<40}{name:<46}{len(values):>5}  {min(values):7.3f}..{max(values):<7.3f}")


if __name__ == "__main__":
    main()
