"""The robustness sweep's own machinery (the findings themselves take hours: `make test-robustness`)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import findings  # noqa: E402
import sweep  # noqa: E402

BOOK = HERE.parents[1] / "book"


def test_seed_ranges_and_lists():
    assert sweep.seeds_from("0-9") == list(range(10))
    assert sweep.seeds_from("3,5,8") == [3, 5, 8]


def test_every_setting_changes_a_numerical_library_variable():
    known = {"ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "NPY_DISABLE_CPU_FEATURES",
             "OPENBLAS_CORETYPE"}
    assert sweep.SETTINGS["native"] == {}
    assert all(env and set(env) <= known for name, env in sweep.SETTINGS.items() if name != "native")
    assert len(sweep.SETTINGS) >= 5     # native and the four settings of the evidence standard, at least


def test_claims_measure_margins_on_the_right_side():
    assert findings.above(0.93, 0.9)["margin"] == pytest.approx(0.03)
    assert findings.below(0.93, 0.9)["margin"] == pytest.approx(-0.03)
    assert math.isnan(findings.measured(0.5)["margin"])


def test_every_finding_names_a_chapter_of_the_book():
    chapters = {p.name[:2] for p in BOOK.glob("[0-9][0-9]_*.md")}
    for name in findings.FINDINGS:
        number = name.split(":")[0].replace("recipe", "").strip()
        if number:
            assert number.zfill(2) in chapters, name


def test_the_table_reports_the_worst_run_and_failures(capsys):
    records = [
        {"finding": "f", "seed": 0, "setting": "native",
         "claims": {"x": findings.above(0.95, 0.9), "m": findings.measured(1.0)}},
        {"finding": "f", "seed": 1, "setting": "omp1",
         "claims": {"x": findings.above(0.85, 0.9), "m": findings.measured(2.0)}},
    ]
    sweep.print_table(records)
    out = capsys.readouterr().out
    assert "FAILS" in out and "seed 1, omp1" in out and "1 claims, 1 with a run on the wrong side" in out
    assert "measured, not claimed" in out and "1.000..2.000" in out


def test_table_can_be_printed_from_a_log(tmp_path):
    log = tmp_path / "log.jsonl"
    record = {"finding": "f", "seed": 0, "setting": "native", "claims": {"x": findings.above(0.95, 0.9)}}
    log.write_text(json.dumps(record) + "\n")
    out = subprocess.run([sys.executable, str(HERE / "sweep.py"), "--table", str(log)], capture_output=True, text=True,
                         check=True).stdout
    assert "+0.050" in out and "0 with a run on the wrong side" in out
