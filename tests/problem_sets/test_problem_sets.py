"""The graded problem sets (problem_sets/weekNN.md), as otter-grader assigns and grades them.

Run by ``make test-problem-sets`` after ``make problem-sets`` has written, for each week,
``weekNN/student/weekNN.ipynb`` and ``weekNN/autograder/`` under ``XAI_PROBLEM_SETS_DIR`` (default
``_build/problem_sets``). For every week, graded with ``otter run`` against its autograder zip, as a
lecturer grades a submission: the master's solution gets full marks, every question included; the
student notebook as handed out (blank answers) gets 0 on every question; and the student notebook
holds no line of the solutions and no hidden test, while the autograder holds them all. A wrong
answer loses points, and the leak checker finds a solution left in a notebook (both shown below).
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTERS = sorted((ROOT / "problem_sets").glob("week*.md"))
BUILT = Path(os.environ.get("XAI_PROBLEM_SETS_DIR", ROOT / "_build" / "problem_sets")).resolve()
WEEKS = [p.stem for p in MASTERS]


# --- the master notebooks, read as text ------------------------------------------------------------

def blocks(source: str) -> list[tuple[str, str]]:
    """The MyST cells of a master: (kind, text), kind 'raw', 'code' or 'markdown' (between cells)."""
    cells, pos = [], 0
    for m in re.finditer(r"^```\{(raw-cell|code-cell)\}[^\n]*\n(.*?)^```[ \t]*$", source, re.M | re.S):
        if source[pos:m.start()].strip():
            cells.append(("markdown", source[pos:m.start()]))
        cells.append(("raw" if m.group(1) == "raw-cell" else "code", m.group(2)))
        pos = m.end()
    return cells


def questions(source: str) -> dict[str, int]:
    """Question name -> points, from the ``# BEGIN QUESTION`` cells."""
    found = re.findall(r"^# BEGIN QUESTION\s*\nname: (\w+)\s*\npoints: (\d+)", source, re.M)
    return {name: int(points) for name, points in found}


def secrets(source: str) -> dict[str, list[str]]:
    """The lines a student must not see, and the tests, as text.

    'solution': lines of the code cells in ``# BEGIN SOLUTION`` blocks that are solutions (between
    inline ``# BEGIN/END SOLUTION`` markers, or ending in ``# SOLUTION``); 'hidden': the lines of
    the hidden test cells. Short lines and lines that also occur in what the student may see
    (prompts, given code, public tests) do not count. 'public_tests' and 'hidden_tests': the test
    cells, whole, without their configuration.
    """
    block, found = [], {"solution": [], "hidden": [], "public": [], "public_tests": [], "hidden_tests": []}
    shown: list[str] = []
    for kind, text in blocks(source):
        if kind == "raw":
            marker = text.strip().splitlines()[0] if text.strip() else ""
            if marker.startswith("# BEGIN "):
                block.append(marker[len("# BEGIN "):])
            elif marker.startswith("# END ") and block:
                block.pop()
            continue
        lines = [line.strip() for line in text.splitlines()]
        if kind == "code" and block and block[-1] == "TESTS":
            hidden = "hidden: true" in text
            body = [line for line in lines if "TEST CONFIG" not in line and line != "hidden: true"]
            found["hidden" if hidden else "public"] += body
            found["hidden_tests" if hidden else "public_tests"].append(
                re.sub(r'""" # BEGIN TEST CONFIG.*?""" # END TEST CONFIG\n', "", text, flags=re.S))
            if not hidden:
                shown += body
        elif kind == "code" and block and block[-1] == "SOLUTION":
            inside = False
            for line in lines:
                if line == "# BEGIN SOLUTION":
                    inside = True
                elif line == "# END SOLUTION":
                    inside = False
                elif inside or line.endswith("# SOLUTION"):
                    found["solution"].append(line.removesuffix("# SOLUTION").strip())
                else:
                    shown.append(line)
        else:
            shown += lines
    shown_set = set(shown)
    return {k: v if k.endswith("_tests") else
            [line for line in v if len(line) >= 12 and (k == "public" or line not in shown_set)]
            for k, v in found.items()}


def canonical(code: str) -> str:
    """Test code as otter stores it (doctest prompts, its own spelling) or as written, compared
    through Python's syntax tree: comments and formatting do not count."""
    code = re.sub(r"^(?:>>>|\.\.\.) ?", "", code, flags=re.M)
    return ast.unparse(ast.parse(code))


def case_codes(tests: dict, hidden: bool | None = None) -> list[str]:
    """The code of the test cases of otter's OK-format tests (question -> test dict): all of them,
    or only the hidden (``hidden=True``) or public ones."""
    return [canonical(c["code"]) for t in tests.values() for suite in t["suites"] for c in suite["cases"]
            if hidden is None or c["hidden"] == hidden]


def zipped_tests(autograder_zip: Path) -> dict:
    """The autograder's tests/qN.py files, each a ``test = {...}`` dict, read without running them."""
    with zipfile.ZipFile(autograder_zip) as z:
        names = [n for n in z.namelist() if re.fullmatch(r"tests/\w+\.py", n)]
        return {Path(n).stem: ast.literal_eval(z.read(n).decode().split("\ntest = ", 1)[1]) for n in names}


def notebook_text(path: Path) -> str:
    """Every cell's source and every string of the metadata (where otter keeps the public tests),
    with doctest prompts removed."""
    nb = nbformat.read(path, as_version=4)
    strings: list[str] = [c.source for c in nb.cells]

    def walk(node) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            strings.append(node)

    walk(nb.metadata)
    return re.sub(r"^\s*(?:>>>|\.\.\.) ?", "", "\n".join(strings), flags=re.M)


def leaks(lines: list[str], text: str) -> list[str]:
    squeezed = re.sub(r"\s+", "", text)
    return [line for line in lines if re.sub(r"\s+", "", line) in squeezed]


def test_every_master_has_questions_with_public_and_hidden_tests():
    assert len(MASTERS) == 10, WEEKS      # weeks 1-7 and the optional 6b, 7b and 7c
    for master in MASTERS:
        source = master.read_text(encoding="utf-8")
        q = questions(source)
        assert 2 <= len(q) <= 4 and all(p > 0 for p in q.values()), (master.name, q)
        assert f"name: {master.stem}\n" in source, f"{master.name}: the assignment name is not {master.stem}"
        found = secrets(source)
        assert found["solution"] and found["hidden"] and found["public"], (master.name, found)
        assert source.count("hidden: true") >= len(q), f"{master.name}: a question without hidden tests"


def test_the_secret_lines_checker_can_fail():
    source = (ROOT / "problem_sets" / "week01.md").read_text(encoding="utf-8")
    found = secrets(source)
    assert "e = np.exp(z - z.max())" in found["solution"]
    assert any("1000.0, 1001.0" in line for line in found["hidden"])
    assert leaks(found["solution"], source) == found["solution"]      # the master leaks everything
    assert leaks(found["solution"], "def softmax(z):\n    ...") == []


# --- the built problem sets, graded with otter ----------------------------------------------------

def built(week: str) -> tuple[Path, Path, Path]:
    """The student notebook, the autograder's solution notebook and its zip."""
    folder = BUILT / week
    if not folder.is_dir():
        pytest.fail(f"no {folder}: run `make problem-sets` (or `make test-problem-sets`)")
    zips = sorted((folder / "autograder").glob("*.zip"))
    assert len(zips) == 1, zips
    return folder / "student" / f"{week}.ipynb", folder / "autograder" / f"{week}.ipynb", zips[0]


def grade(notebook: Path, autograder_zip: Path, out: Path) -> dict[str, tuple[float, float]]:
    """``otter run`` as a lecturer grades one submission: question -> (score, max score)."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([sys.executable, "-m", "otter", "run", "-a", str(autograder_zip), "-o", str(out),
                          str(notebook)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {t["name"]: (float(t["score"]), float(t["max_score"]))
            for t in results["tests"] if t.get("max_score") is not None}


def explain(scores: dict[str, tuple[float, float]], out: Path) -> str:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    failed = [t["output"][-1500:] for t in results["tests"]
              if t.get("max_score") is not None and t["score"] < t["max_score"]]
    return f"{scores}\n" + "\n".join(failed)


@pytest.mark.parametrize("week", WEEKS)
def test_the_solution_gets_full_marks(week, tmp_path):
    _, solution, autograder_zip = built(week)
    points = questions((ROOT / "problem_sets" / f"{week}.md").read_text(encoding="utf-8"))
    scores = grade(solution, autograder_zip, tmp_path)
    assert set(scores) == set(points), (scores, points)
    assert all(scores[q] == (p, p) for q, p in points.items()), explain(scores, tmp_path)


@pytest.mark.parametrize("week", WEEKS)
def test_the_blank_student_notebook_gets_no_marks(week, tmp_path):
    student, _, autograder_zip = built(week)
    scores = grade(student, autograder_zip, tmp_path)
    points = questions((ROOT / "problem_sets" / f"{week}.md").read_text(encoding="utf-8"))
    assert set(scores) == set(points), scores
    assert all(score == 0 and top == points[q] for q, (score, top) in scores.items()), scores


@pytest.mark.parametrize("week", WEEKS)
def test_the_student_notebook_has_no_solution_and_no_hidden_test(week):
    student, solution, autograder_zip = built(week)
    found = secrets((ROOT / "problem_sets" / f"{week}.md").read_text(encoding="utf-8"))
    text = notebook_text(student)
    assert not leaks(found["solution"], text), f"{week}: solution lines in the student notebook"
    assert not leaks(found["hidden"], text), f"{week}: hidden test lines in the student notebook"
    for marker in ("BEGIN SOLUTION", "# SOLUTION", "BEGIN TESTS", "TEST CONFIG", "hidden: true"):
        assert marker not in text, f"{week}: {marker!r} in the student notebook"
    # the student has exactly the public tests (otter keeps them in the notebook's metadata), none
    # marked hidden, and a grader.check cell per question
    nb = nbformat.read(student, as_version=4)
    tests = nb.metadata["otter"]["tests"]
    cases = [c for t in tests.values() for suite in t["suites"] for c in suite["cases"]]
    assert cases and not any(c["hidden"] for c in cases), f"{week}: a hidden case in the student notebook"
    public, hidden = ([canonical(t) for t in found[k]] for k in ("public_tests", "hidden_tests"))
    assert sorted(case_codes(tests)) == sorted(public), f"{week}: the student's tests are not the public ones"
    assert not set(hidden) & set(case_codes(tests))
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    checks = re.findall(r'grader\.check\("(\w+)"\)', code)
    assert checks == list(questions((ROOT / "problem_sets" / f"{week}.md").read_text(encoding="utf-8")))
    # ... and the solution notebook keeps the solutions, the autograder every hidden test
    assert leaks(found["solution"], notebook_text(solution)) == found["solution"]
    graded = zipped_tests(autograder_zip)
    assert sorted(graded) == sorted(checks), graded.keys()
    assert sorted(case_codes(graded, hidden=True)) == sorted(hidden), f"{week}: the autograder's hidden tests"
    assert sorted(case_codes(graded, hidden=False)) == sorted(public), f"{week}: the autograder's public tests"


def test_a_wrong_answer_loses_points(tmp_path):
    """Not vacuous: week 1's solution with a softmax that forgets to normalise, graded. Question 1
    keeps only the point of the one check that a missing normalisation passes (shifting the scores
    leaves the result unchanged); the public check already fails. Question 2 keeps its points."""
    _, solution, autograder_zip = built("week01")
    nb = nbformat.read(solution, as_version=4)
    cell = next(c for c in nb.cells if "return e / e.sum()" in c.source)
    cell.source = cell.source.replace("return e / e.sum()", "return e")
    wrong = tmp_path / "week01.ipynb"
    nbformat.write(nb, wrong)
    scores = grade(wrong, autograder_zip, tmp_path / "out")
    assert scores == {"q1": (1.0, 3.0), "q2": (4.0, 4.0)}, scores
