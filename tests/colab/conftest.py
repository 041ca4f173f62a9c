"""The Colab-start simulation is slow (a virtual environment, pip, one chapter): it runs only when
asked for with ``-m colab`` (``make test-colab``), and is skipped in a plain ``pytest`` run."""
import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "colab: simulates a Colab start in a fresh virtual environment (make test-colab)")


def pytest_collection_modifyitems(config, items):
    if "colab" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the Colab simulation runs with -m colab (make test-colab)")
    for item in items:
        if "colab" in item.keywords:
            item.add_marker(skip)
