"""Fixtures of the FAISS parity tests.

faiss-cpu is part of the ``[test]`` extra. On a developer machine without it these tests skip; in
CI (``CI`` set) a missing faiss fails the run instead of silently skipping the parity proof.
"""

from __future__ import annotations

import pytest

from tests.conftest import skip_or_fail


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/parity/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.parity)


@pytest.fixture(scope="session")
def faiss():
    try:
        import faiss as faiss_module
    except ImportError as exc:
        skip_or_fail(f"faiss-cpu is not installed ({exc}); install the test extra: pip install \".[test]\"")
    return faiss_module
