"""Shared test fixtures: tiny structures built in code, an isolated cache directory per test session."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

TEST_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the feature/NMI caches of the test run away from the user's ~/.cache."""
    os.environ["MATFLOW_CACHE_DIR"] = str(tmp_path_factory.mktemp("matflow-cache"))
    yield


@pytest.fixture
def nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


@pytest.fixture
def cocrfeni() -> Structure:
    """A 4-atom fcc CoCrFeNi cell (one atom of each element)."""
    return Structure(Lattice.cubic(3.57), ["Co", "Cr", "Fe", "Ni"],
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of ``benchmarks/`` as a module (they are scripts, not a package)."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
