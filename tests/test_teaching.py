"""The instructor's kit (book/teaching.md, book/notation.md, book/projects.md) agrees with the book.

What can be checked without reading: every chapter of ``_toc.yml`` is in the week plan; every
chapter reference on the kit's pages names an existing label; every symbol on the notation page
occurs in the mathematics of each chapter it is listed for, and in at least two chapters; the
teaching page has its paired notebook (the site's Colab button opens it); every week of the plan
has its graded problem set on the week's chapters. Each checker is also run on a broken input, to
show that it can fail.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
KIT = ("teaching", "notation", "projects")
CHAPTER_FILES = sorted(BOOK.glob("[0-9][0-9]_*.md"))
REF = re.compile(r"\{ref\}`(?:[^`<]*<)?([^`<>]+)>?`")
DOC = re.compile(r"\{doc\}`(?:[^`<]*<)?([^`<>]+)>?`")


# --- helpers ---------------------------------------------------------------------------------------

def toc_files(node) -> list[str]:
    """Every ``file:`` entry of a table of contents, in order."""
    if isinstance(node, dict):
        found = [node["file"]] if "file" in node else []
        return found + [f for v in node.values() if isinstance(v, (list, dict)) for f in toc_files(v)]
    if isinstance(node, list):
        return [f for item in node for f in toc_files(item)]
    return []


def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))


def toc_chapters(table: dict) -> list[str]:
    """The numbered chapters (``NN_name``) of a table of contents."""
    return [Path(f).stem for f in toc_files(table) if re.match(r"\d\d_", Path(f).stem)]


def week_plan(page: str) -> dict[str, list[str]]:
    """Week -> chapters, from the ``| Week |`` table of the section 'Week-by-week plan'."""
    assert "## Week-by-week plan" in page, "teaching.md has no '## Week-by-week plan' section"
    section = page.split("## Week-by-week plan", 1)[1].split("\n## ", 1)[0]
    weeks = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 1 and cells[0][:1].isdigit():
            weeks[cells[0]] = DOC.findall(cells[1])
    return weeks


def plan_table(page: str, heading: str) -> dict[str, list[str]]:
    """Row label -> chapters, from the first table after ``heading`` (up to the next heading)."""
    assert heading in page, f"teaching.md has no {heading!r}"
    section = re.split(r"\n#{2,3} ", page.split(heading, 1)[1], maxsplit=1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1 and DOC.search(cells[1]):
            rows[cells[0]] = DOC.findall(cells[1])
    return rows


def missing_from_plan(chapters: list[str], weeks: dict[str, list[str]]) -> list[str]:
    planned = {name for names in weeks.values() for name in names}
    return [c for c in chapters if c not in planned]


def labels() -> dict[str, str]:
    """Every ``(label)=`` target in book/*.md -> the file stem that holds it."""
    found = {}
    for path in BOOK.glob("*.md"):
        for label in re.findall(r"^\(([\w-]+)\)=\s*$", path.read_text(encoding="utf-8"), flags=re.M):
            found[label] = path.stem
    return found


def normalise(math: str) -> str:
    """Whitespace removed, and ``x_a^b`` written as ``x^b_a``, so both orders of indices compare equal."""
    math = re.sub(r"\s+", "", math)
    group = r"(\{[^{}]*\}|\\[A-Za-z]+|[^{}\\])"
    return re.sub(r"_" + group + r"\^" + group, r"^\2_\1", math)


def chapter_math(path: Path) -> str:
    """All mathematics of a chapter's prose ($...$ and $$...$$, outside code cells), normalised."""
    text = re.sub(r"^(`{3,})\{code-cell\}.*?^\1[ \t]*$", "", path.read_text(encoding="utf-8"),
                  flags=re.S | re.M)
    display = re.findall(r"\$\$(.*?)\$\$", text, flags=re.S)
    inline = re.findall(r"\$([^$\n]+)\$", re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S))
    return " ".join(normalise(m) for m in display + inline)


def occurs(symbol: str, math: str) -> bool:
    """``symbol`` is in ``math``; a ``\\cdot`` placeholder (as in a norm) matches anything."""
    return all(normalise(piece) in math for piece in symbol.split(r"\cdot") if normalise(piece))


def notation_rows(page: str) -> list[dict]:
    """Rows of the notation page's tables: symbols (the $...$ of the first cell) and chapter labels.

    A row of the first table lists its chapters in columns 3 and 4 (defined in, also used in), a row
    of the second in column 3. References inside the 'meaning' column are not chapters of the row.
    """
    rows = []
    for line in page.splitlines():
        if not line.startswith("| $"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        symbols = re.findall(r"\$([^$]+)\$", cells[0])
        chapter_cells = cells[2:]
        rows.append({"line": line, "symbols": symbols, "defined": REF.findall(chapter_cells[0]),
                     "chapters": [lab for cell in chapter_cells for lab in REF.findall(cell)]})
    return rows


def notation_problems(page: str, label_files: dict[str, str], math: dict[str, str]) -> list[str]:
    problems = []
    for row in notation_rows(page):
        if not row["symbols"]:
            problems.append(f"no $symbol$ in the first cell: {row['line']}")
        if not row["chapters"]:
            problems.append(f"no chapter reference: {row['line']}")
        for label in row["chapters"]:
            if label not in label_files:
                problems.append(f"unknown label {label!r}: {row['line']}")
                continue
            chapter = label_files[label]
            if not any(occurs(s, math.get(chapter, "")) for s in row["symbols"]):
                problems.append(f"{row['symbols']} does not occur in the mathematics of {chapter}")
    by_symbol: dict[str, set[str]] = {}
    for row in notation_rows(page):   # a row's spellings ($\mathbf{x}$, $x$) count together
        if row["symbols"]:
            by_symbol.setdefault(row["symbols"][0], set()).update(
                c for c, m in math.items() if any(occurs(s, m) for s in row["symbols"]))
    for s, chapters in by_symbol.items():
        if len(chapters) < 2:
            problems.append(f"${s}$ occurs in {sorted(chapters)} only: the page lists symbols of 2+ chapters")
    return problems


@pytest.fixture(scope="module")
def math() -> dict[str, str]:
    return {p.stem: chapter_math(p) for p in CHAPTER_FILES}


def page(name: str) -> str:
    return (BOOK / f"{name}.md").read_text(encoding="utf-8")


# --- the week plan ---------------------------------------------------------------------------------

#: The part of _toc.yml each page of the kit belongs to: the notation is reference material.
KIT_PARTS = {"teaching": "For instructors", "projects": "For instructors", "notation": "Reference"}


def part_of(table: dict, name: str) -> str | None:
    """The caption of the toc part that lists ``name``, or None."""
    for part in table.get("parts", []):
        if name in [Path(f).stem for f in toc_files(part)]:
            return part.get("caption")
    return None


def test_kit_pages_are_in_the_toc():
    assert set(KIT_PARTS) == set(KIT)
    for name in KIT:
        assert (BOOK / f"{name}.md").is_file(), f"book/{name}.md is missing"
        assert part_of(toc(), name) == KIT_PARTS[name], (
            f"{name} is in the toc part {part_of(toc(), name)!r}, not {KIT_PARTS[name]!r}")
    moved = {"parts": [{"caption": "For instructors", "chapters": [{"file": "notation"}]}]}
    assert part_of(moved, "notation") == "For instructors" and part_of(moved, "teaching") is None


def test_every_toc_chapter_is_in_the_week_plan():
    chapters = toc_chapters(toc())
    assert len(chapters) >= 13, chapters
    missing = missing_from_plan(chapters, week_plan(page("teaching")))
    assert not missing, f"chapters in _toc.yml but not in the week plan of book/teaching.md: {missing}"


def test_week_plan_names_only_existing_chapters_once():
    planned = [name for names in week_plan(page("teaching")).values() for name in names]
    assert len(planned) == len(set(planned)), f"a chapter is in two weeks: {planned}"
    unknown = [name for name in planned if not (BOOK / f"{name}.md").is_file()]
    assert not unknown, f"the week plan names chapters that do not exist: {unknown}"


def test_week_plan_checker_catches_a_missing_chapter():
    plan = page("teaching")
    weeks = week_plan(plan)
    assert len(weeks) == 10, weeks   # seven weeks and the optional 6b, 7b and 7c
    without = plan.replace("{doc}`09_grad_cam`", "Grad-CAM")
    assert missing_from_plan(toc_chapters(toc()), week_plan(without)) == ["09_grad_cam"]
    extra = {"parts": [{"chapters": [{"file": "99_new_chapter"}]}]}
    assert missing_from_plan(toc_chapters(extra), weeks) == ["99_new_chapter"]


INTENSIVE = "### A one-week intensive"
SEMESTER = "### A fourteen-week semester"


def test_the_semester_has_fourteen_weeks_and_every_chapter_once():
    weeks = plan_table(page("teaching"), SEMESTER)
    assert list(weeks) == [str(w) for w in range(1, 15)], list(weeks)
    planned = [name for names in weeks.values() for name in names]
    assert sorted(planned) == sorted(toc_chapters(toc())), planned
    # the page's arithmetic: 5 weeks of background (chapters 1-8) and one a chapter after them
    background = [w for w, names in weeks.items() if all(int(n[:2]) <= 8 for n in names)]
    assert len(background) == 5 and len(weeks) - len(background) == 9
    assert "5 + 9 = 14 weeks and all 18 chapters" in page("teaching")


def test_the_intensive_has_five_days_and_names_the_rest():
    plan = page("teaching")
    days = plan_table(plan, INTENSIVE)
    assert list(days) == [str(d) for d in range(1, 6)], list(days)
    in_days = [name for names in days.values() for name in names]
    assert len(in_days) == len(set(in_days)) == 12
    rest = sorted(set(toc_chapters(toc())) - set(in_days))
    # the prose before the table names the others: 2-5 before the week, 15 and 18 afterwards
    assert rest == ["02_gradient_descent", "03_perceptron", "04_mlp_xor", "05_backpropagation",
                    "15_trust_benchmarks", "18_blackbox_and_fooled"], rest
    assert "4 + 12 + 2 = 18 chapters" in plan and "(4 + 2 + 2 + 2 + 2)" in plan
    assert [len(n) for n in days.values()] == [4, 2, 2, 2, 2]


def test_the_plan_tables_checker_can_fail():
    plan = page("teaching")
    without = plan.replace("| 12 | {doc}`15_trust_benchmarks`", "| 12 | benchmarks")
    weeks = plan_table(without, SEMESTER)
    assert "12" not in weeks and missing_from_plan(toc_chapters(toc()), weeks) == ["15_trust_benchmarks"]
    with pytest.raises(AssertionError):
        plan_table(plan.replace(SEMESTER, "### A long semester"), SEMESTER)


def test_course_lengths_add_up():
    """The sums the page states for the other lengths: 7 + 3 = 10 with the optional weeks, and the
    slower background's 9 and 12 (also checked against the plan table in teaching.md itself)."""
    weeks = week_plan(page("teaching"))
    main = [w for w in weeks if w.isdigit()]
    optional = len(weeks) - len(main)
    assert (len(main), optional) == (7, 3)
    text = " ".join(page("teaching").split())
    assert f"it has {len(main)} + {optional} = {len(main) + optional}" in text
    slow = len(main) - 3 + 5
    assert f"7 − 3 + 5 = {slow} weeks" in text and f"{slow} + 3 = {slow + optional} weeks" in text


def test_every_part_has_quiz_questions_with_answers():
    """One ### section per part of the book in 'Quiz and exam questions', each with numbered
    questions, one marked **Exam.**, and a folded admonition of solutions titled 'Solution...'
    (the student edition leaves those out)."""
    quiz = page("teaching").split("## Quiz and exam questions", 1)[1]
    sections = re.split(r"\n### ", quiz)[1:]
    parts = [p for p in toc()["parts"] if p.get("numbered")]
    assert len(sections) == len(parts), [s.splitlines()[0] for s in sections]
    for section, part in zip(sections, parts):
        title = section.splitlines()[0]
        assert title.startswith(part["caption"]), (title, part["caption"])
        questions = re.findall(r"^\d+\. ", section.split("```{admonition}")[0], flags=re.M)
        answers = re.search(r"```\{admonition\} (Solution[^\n]*)\n:class: dropdown\n(.*?)\n```", section, re.S)
        assert len(questions) >= 2 and "**Exam.**" in section, title
        assert answers, f"{title}: no folded 'Solution...' admonition"
        assert len(re.findall(r"^\d+\. ", answers.group(2), flags=re.M)) == len(questions), title


# --- the problem sets --------------------------------------------------------------------------------

def problem_set_name(week: str) -> str:
    """The problem set of a week of the plan: '1' -> 'week01', '6b (optional)' -> 'week06b'."""
    number, suffix = re.match(r"(\d+)([a-z]*)", week).groups()
    return f"week{int(number):02d}{suffix}"


def problem_set_chapters(master: str) -> list[str]:
    """The chapters a master names in its first paragraph, 'Chapters 1 (*...*) and 2 (*...*)': ['01', '02']."""
    intro = re.search(r"^# Problem set[^\n]*\n\n(.*?)\n\n", master, re.M | re.S)
    return [] if intro is None else [f"{int(n):02d}" for n in re.findall(r"(\d+) \(\*", intro.group(1))]


def problem_set_problems(weeks: dict[str, list[str]], masters: dict[str, str]) -> list[str]:
    """Each week of the plan has its master problem_sets/weekNN.md on the week's chapters, and no
    master is left over; ``masters`` maps a file stem to its text."""
    problems = []
    by_name = {problem_set_name(week): chapters for week, chapters in weeks.items()}
    for name, chapters in by_name.items():
        if name not in masters:
            problems.append(f"no problem_sets/{name}.md for its week of the plan")
        elif problem_set_chapters(masters[name]) != [c[:2] for c in chapters]:
            problems.append(f"problem_sets/{name}.md names chapters {problem_set_chapters(masters[name])}, "
                            f"its week has {[c[:2] for c in chapters]}")
    problems += [f"problem_sets/{name}.md is in no week of the plan" for name in sorted(set(masters) - set(by_name))]
    return problems


def masters() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted((ROOT / "problem_sets").glob("week*.md"))}


def test_every_week_has_its_problem_set():
    weeks = week_plan(page("teaching"))
    assert len(masters()) == len(weeks) == 10
    problems = problem_set_problems(weeks, masters())
    assert not problems, "\n  ".join(problems)
    assert "## Graded problem sets" in page("teaching") and 'f"problem_sets/{name}.ipynb"' in page("teaching")


def test_the_problem_set_checker_can_fail():
    weeks, found = week_plan(page("teaching")), masters()
    assert problem_set_name("6b (optional)") == "week06b" and problem_set_name("7") == "week07"
    assert problem_set_chapters(found["week06b"]) == ["11"]
    without = {k: v for k, v in found.items() if k != "week05"}
    assert problem_set_problems(weeks, without) == ["no problem_sets/week05.md for its week of the plan"]
    moved = dict(found, week05=found["week05"].replace("Chapter 9 (*", "Chapter 10 (*"))
    assert problem_set_problems(weeks, moved) == [
        "problem_sets/week05.md names chapters ['10'], its week has ['09']"]
    extra = dict(found, week08=found["week07"])
    assert problem_set_problems(weeks, extra) == ["problem_sets/week08.md is in no week of the plan"]


# --- references and notation -----------------------------------------------------------------------

@pytest.mark.parametrize("name", KIT)
def test_every_reference_names_an_existing_label(name):
    known = labels()
    unknown = sorted(set(REF.findall(page(name))) - set(known))
    assert not unknown, f"book/{name}.md refers to labels that no page defines: {unknown}"
    docs = [d for d in DOC.findall(page(name)) if not (BOOK / f"{d}.md").is_file()]
    assert not docs, f"book/{name}.md links to missing pages: {docs}"


def test_every_chapter_has_its_label_in_the_notation_page_format():
    """The notation page refers to chapters by their ``(chap-...)=`` labels."""
    known = labels()
    for row in notation_rows(page("notation")):
        for label in row["chapters"]:
            assert label.startswith("chap-") and re.match(r"\d\d_", known.get(label, "")), (label, row["line"])


def test_notation_symbols_occur_where_the_page_says(math):
    rows = notation_rows(page("notation"))
    assert len(rows) >= 40, len(rows)
    problems = notation_problems(page("notation"), labels(), math)
    assert not problems, "book/notation.md:\n  " + "\n  ".join(problems)


def test_notation_checker_can_fail(math):
    known = labels()
    cases = {
        "| $\\eta$ | learning rate | {ref}`Convolution <chap-convolution>` | |": "does not occur",
        "| $\\eta$ | learning rate | {ref}`x <chap-nowhere>` | |": "unknown label",
        "| $\\kappa$ | condition number | {ref}`x <chap-gradient-descent>` | |": "only",
        "| $x$ | no chapter | first used nowhere | |": "no chapter reference",
    }
    for line, expected in cases.items():
        problems = notation_problems(line, known, math)
        assert any(expected in p for p in problems), (line, problems)


def test_index_order_does_not_matter():
    assert normalise(r"\alpha_k^c") == normalise(r"\alpha^c_k")
    assert normalise(r"A^k_{ij}") == normalise(r"A_{ij}^k")
    assert normalise(r"w_i^{t+1}") == normalise(r"w^{t+1}_i")
    assert occurs(r"\lVert \cdot \rVert", normalise(r"\lVert \Delta \rVert"))
    assert not occurs(r"\lVert \cdot \rVert", normalise(r"\lvert x \rvert"))


# --- the teaching page is a notebook ----------------------------------------------------------------

def test_teaching_page_has_its_paired_notebook():
    """The site shows a Colab button on every notebook page; it opens book/teaching.ipynb."""
    source = BOOK / "teaching.md"
    notebook_path = source.with_suffix(".ipynb")
    fix = "run `jupytext --to ipynb book/teaching.md`"
    assert notebook_path.is_file(), f"book/teaching.ipynb is missing ({fix})"
    notebook = nbformat.read(notebook_path, as_version=4)
    want = [(c.cell_type, c.source.strip()) for c in jupytext.read(source).cells]
    got = [(c.cell_type, c.source.strip()) for c in notebook.cells]
    assert want == got, f"book/teaching.ipynb differs from book/teaching.md ({fix})"
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), f"outputs stored ({fix})"
