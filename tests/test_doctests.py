"""Every docstring example of the installed package runs and prints what it shows.

The doctests run here, over the modules of the imported ``pqkit`` (editable or installed alike),
rather than through ``--doctest-modules`` on ``src/``, which would import a second copy of the
package from the source tree without its compiled core.
"""

import doctest
import importlib
import pkgutil

import pytest

import pqkit

MODULES = sorted(info.name for info in pkgutil.walk_packages(pqkit.__path__, "pqkit.")
                 if info.name != "pqkit.__main__")


def test_the_doctests_are_found():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES
                   for t in finder.find(importlib.import_module(name)))
    assert len(MODULES) > 40 and examples >= 20


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
