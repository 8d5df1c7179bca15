"""Fixtures of the FAISS parity tests.

faiss-cpu is part of the ``[test]`` extra. On a developer machine without it these tests skip; in
CI (``CI`` set) a missing faiss fails the run instead of silently skipping the parity proof.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/parity/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.parity)

