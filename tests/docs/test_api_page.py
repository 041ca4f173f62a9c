"""The API reference page (book/api.md) builds under the strict build and lists every public name.

The full strict build (``make test-book``) executes every chapter, which takes minutes. This test
builds only the pages the API reference needs (the API page, as the root, and the bibliography)
with notebook execution off, under the same ``-n -W`` rules and the book's own ``_config.yml``,
then checks the HTML: every module of the package has its section and
every name in each module's ``__all__`` has its entry (anchor ``xai_helpers.<module>.<name>``).
A new module or a new public name therefore needs nothing but a docstring and one ``automodule``
line in book/api.md. Run by ``make test-api`` (part of ``make test``); about 15 s.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import xai_helpers

ROOT = Path(__file__).resolve().parents[2]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"


def _modules() -> list[str]:
    names = ["xai_helpers"]
    for info in pkgutil.walk_packages([str(ROOT / "xai_helpers")], prefix="xai_helpers."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


@pytest.fixture(scope="module")
def api_html(tmp_path_factory) -> str:
    assert Path(xai_helpers.__file__).resolve().is_relative_to(ROOT), (
        f"xai_helpers is imported from {xai_helpers.__file__}, not from this working tree")
    tmp = tmp_path_factory.mktemp("api")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # no chapter runs; api.md and intro.md have no code cells
    sphinx = config["sphinx"]
    # Paths in _config.yml are relative to it (local extensions) or to book/ (extra files); the copy
    # lives elsewhere, and the site's MathJax (make mathjax) is not needed for this page.
    sphinx["local_extensions"] = {name: str((ROOT / path).resolve())
                                  for name, path in sphinx["local_extensions"].items()}
    sphinx["config"]["html_extra_path"] = []
    (tmp / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    # The API page is the root: the landing page links to every chapter, which this build leaves out.
    toc = {"format": "jb-book", "root": "api",
           "parts": [{"caption": "Reference", "chapters": [{"file": "bibliography"}]}]}
    (tmp / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "XAI_BOOK_STATIC": "1"}
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(ROOT / "book"), "--config", str(tmp / "_config.yml"),
         "--toc", str(tmp / "_toc.yml"), "--path-output", str(tmp / "out"), "-n", "-W", "--keep-going"],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0 and not warnings, (
        "the strict build of the API page failed:\n" + "\n".join(warnings[:40]) + "\n" + result.stderr[-3000:])
    return (tmp / "out" / "_build" / "html" / "api.html").read_text(encoding="utf-8")


def test_api_page_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert re.search(r"^\s*- file: api\s*$", toc, re.MULTILINE), "book/api.md is not listed in _toc.yml"


def test_every_module_has_a_section(api_html):
    ids = set(re.findall(r'id="([^"]+)"', api_html))
    missing = [m for m in _modules() if f"module-{m}" not in ids]
    assert not missing, f"modules without an automodule directive in book/api.md: {missing}"


def test_every_public_name_has_an_entry(api_html):
    ids = set(re.findall(r'id="([^"]+)"', api_html))
    missing = []
    for module_name in _modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            # A package re-exports names documented in its submodules (featvis.render -> featvis.render.render).
            found = (f"{module_name}.{name}" in ids or f"module-{module_name}.{name}" in ids
                     or any(i.startswith(f"{module_name}.") and i.endswith(f".{name}") for i in ids))
            if not found:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API page: {missing}"
    assert len(ids) > 100, len(ids)


def test_entries_show_the_package_docstrings(api_html):
    text = re.sub(r"<[^>]+>", "", api_html)
    # Shapes and formulas come through (examples from three modules).
    assert "[B, 3, H, W]" in text
    assert "Per-channel" in text and "(x - mean) / std" in text   # models.Normalize
    assert "Start offsets" in text                               # perturbation.window_positions
    # An nn.Module subclass must not show torch's docstring for forward() (autodoc_inherit_docstrings).
    assert "Define the computation performed at every call" not in text
    # Signatures name the Target alias, linked to its entry.
    assert 'href="#xai_helpers.core.Target"' in api_html
    # A constant without a doc comment shows its value, not the docstring of its type.
    assert "Built-in immutable sequence" not in text
