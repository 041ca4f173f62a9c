"""`pip install .` gives a package that works outside the repository.

The test builds the wheel from a snapshot of this working tree (tracked and untracked, not ignored
files, as a git clone would have them), checks what the wheel holds, installs it into a fresh
virtual environment outside the repository, and runs one method of each kind there from a scratch
folder: a CAM, a gradient method, a perturbation and the offline EfficientNet-Lite0 (``smoke.py``).

The fresh environment must not download torch (gigabytes). It sees the *dependencies* of the
environment running this test through one ``.pth`` line naming a folder of symbolic links to that
environment's site-packages, minus everything that belongs to xai_helpers (the editable install's
finder, ``.pth`` and ``dist-info``). A folder named in a ``.pth`` file is put on ``sys.path`` but its
own ``.pth`` files are not processed, and the filtered folder has none anyway: the repository cannot
leak in, which the test checks (``xai_helpers.__file__``, ``sys.path``, ``sys.meta_path``). pip
installs the wheel with ``--no-index``, so it must find every declared dependency already there.

Run by ``make test-wheel`` (part of ``make test``); about 20 s.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).resolve().parent / "smoke.py"
# What an editable install of xai_helpers puts into site-packages; none of it may reach the fresh venv.
EDITABLE = re.compile(r"^(__editable__.*|xai_helpers.*|.*\.pth)$", re.IGNORECASE)


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point Python back at the repository."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env.update({"PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), **extra})
    return env


def _repo_package_files() -> set[str]:
    """Files under xai_helpers/ that git knows (the wheel must carry each of them)."""
    files = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "xai_helpers"],
                 cwd=ROOT).stdout
    return {name for name in filter(None, files.split("\0")) if (ROOT / name).is_file()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wheel")
    assert not path.resolve().is_relative_to(ROOT), "the scratch folder must lie outside the repository"
    return path


@pytest.fixture(scope="module")
def wheel(scratch, copy_working_tree) -> Path:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # --no-build-isolation (no download of the build backend): this environment's setuptools must
    # then satisfy build-system.requires itself.
    import setuptools

    for req in map(Requirement, pyproject["build-system"]["requires"]):
        if req.name == "setuptools":
            assert req.specifier.contains(Version(setuptools.__version__)), (req, setuptools.__version__)
    source = copy_working_tree(scratch / "source")
    out = scratch / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source],
         env=_clean_env(), cwd=scratch)
    wheels = sorted(out.glob("xai_helpers-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    dist_info = f"xai_helpers-{version}.dist-info/"
    stray = sorted(n for n in names if not n.startswith(("xai_helpers/", dist_info)))
    assert not stray, f"the wheel holds files outside the package (tests, book, ...): {stray}"
    expected = {n for n in _repo_package_files() if not n.endswith((".pyc",))}
    missing = sorted(expected - names)
    assert not missing, (f"the wheel lacks {missing}: subpackages are found by [tool.setuptools.packages.find], "
                         "data files must be listed in [tool.setuptools.package-data]")
    assert "xai_helpers/featvis/__init__.py" in names and "xai_helpers/py.typed" in names
    assert not any("__pycache__" in n for n in names)
    # The declared dependencies are the ones in pyproject.toml.
    metadata = zipfile.ZipFile(wheel).read(dist_info + "METADATA").decode()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name for r in project["dependencies"]}
    listed = {Requirement(line.split(":", 1)[1].strip()).name for line in metadata.splitlines()
              if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert listed == declared, (listed, declared)


def _dependency_view(scratch: Path) -> Path:
    """Symbolic links to this environment's site-packages entries, xai_helpers's own left out."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = scratch / "dependencies"
    view.mkdir()
    for entry in site.iterdir():
        if EDITABLE.match(entry.name) or entry.name == "__pycache__":
            continue
        (view / entry.name).symlink_to(entry)
    return view


@pytest.fixture(scope="module")
def fresh_venv(scratch) -> Path:
    """A new venv (no pip of its own) whose only extra sys.path entry is the dependency view."""
    venv = scratch / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", "--without-pip", venv], env=_clean_env())
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env=_clean_env()).stdout.strip())
    (purelib / "zz_dependencies.pth").write_text(f"{_dependency_view(scratch)}\n")
    return venv


def test_installed_wheel_runs_every_kind_of_method(wheel, fresh_venv, scratch):
    python = fresh_venv / "bin" / "python"
    env = _clean_env(MPLCONFIGDIR=str(scratch / "mpl"), MPLBACKEND="Agg")
    before = _run([python, "-c", "import importlib.util as u; print(u.find_spec('xai_helpers'))"], env=env, cwd=scratch)
    assert before.stdout.strip() == "None", f"xai_helpers leaks into the fresh venv before the install: {before.stdout}"
    # pip runs with the fresh venv's interpreter; --no-index: every dependency must be there already.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "-q", wheel], env=env, cwd=scratch)

    work = scratch / "work"
    work.mkdir()
    shutil.copy(SMOKE, work / "smoke.py")
    result = _run([python, "smoke.py"], env=env, cwd=work, timeout=600)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    installed = Path(report["file"]).resolve()
    assert installed.is_relative_to(fresh_venv.resolve()), f"xai_helpers came from {installed}, not the wheel"
    assert not any(Path(p).resolve().is_relative_to(ROOT) for p in report["sys_path"] if p), report["sys_path"]
    assert not any("editable" in f.lower() for f in report["finders"]), report["finders"]

    assert report["grad_cam"]["shape"][-2:] == [32, 32] and report["grad_cam"]["corr"] > 0.999, report["grad_cam"]
    assert report["saliency"]["shape"] == [2, 3, 32, 32] and report["saliency"]["corr"] > 0.9999, report["saliency"]
    assert report["occlusion"]["shape"] == [2, 32, 32] and report["occlusion"]["max_error"] < 1e-5, report["occlusion"]
    assert report["lite0"]["top1"] in {"Egyptian cat", "tabby", "tiger cat"}, report["lite0"]
