"""The shared execution of `make test` (book/_ext/xai_book_execution.py): when it reuses, when it empties."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("xai_book_execution", ROOT / "book" / "_ext" / "xai_book_execution.py")
execution = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execution)


def _config() -> SimpleNamespace:
    return SimpleNamespace(nb_execution_mode="force", nb_execution_cache_path="")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A stand-in repository: a package, the requirements and pyproject."""
    (tmp_path / "xai_helpers" / "data").mkdir(parents=True)
    (tmp_path / "xai_helpers" / "core.py").write_text("x = 1\n")
    (tmp_path / "xai_helpers" / "data" / "photo.bin").write_bytes(b"\x00\x01")
    (tmp_path / "requirements.txt").write_text("torch\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    return tmp_path


def test_the_fingerprint_changes_with_the_package_its_data_and_the_requirements(repository: Path) -> None:
    first = execution.fingerprint(repository)
    assert execution.fingerprint(repository) == first
    seen = {first}
    for path, content in [("xai_helpers/core.py", "x = 2\n"), ("xai_helpers/data/photo.bin", "\x00\x02"),
                          ("requirements.txt", "torch==2\n"), ("xai_helpers/new.py", "")]:
        (repository / path).write_text(content)
        seen.add(execution.fingerprint(repository))
    assert len(seen) == 5, "each change must give a new fingerprint"
    # bytecode caches are not inputs
    (repository / "xai_helpers" / "__pycache__").mkdir()
    (repository / "xai_helpers" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"junk")
    assert execution.fingerprint(repository) in seen


def test_without_the_variable_the_build_executes_every_chapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(execution.ENVIRONMENT_VARIABLE, raising=False)
    config = _config()
    execution.use_shared_execution(None, config)
    assert config.nb_execution_mode == "force"


def test_a_cache_of_the_same_package_is_kept_and_another_is_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(execution.ENVIRONMENT_VARIABLE, str(cache))
    config = _config()
    execution.use_shared_execution(None, config)
    assert (config.nb_execution_mode, Path(config.nb_execution_cache_path)) == ("cache", cache.resolve())
    assert (cache / execution.FINGERPRINT_FILE).read_text().strip() == execution.fingerprint()

    (cache / "executed.db").write_text("outputs")  # a first build stored its outputs
    execution.use_shared_execution(None, _config())
    assert (cache / "executed.db").exists(), "the same package: outputs are reused"

    (cache / execution.FINGERPRINT_FILE).write_text("another version\n")
    execution.use_shared_execution(None, _config())
    assert not (cache / "executed.db").exists(), "another package: outputs must go"
    assert (cache / execution.FINGERPRINT_FILE).read_text().strip() == execution.fingerprint()
    shutil.rmtree(cache)
