"""Shared fixtures of the system tests: where the built binaries are.

OMBRA_BUILD names the build directory (make test sets it; the default is build/)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    d = pathlib.Path(os.environ.get("OMBRA_BUILD", ROOT / "build"))
    if not (d / "build.ninja").exists():
        pytest.fail(f"no build in {d}: run 'make' first (or set OMBRA_BUILD)")
    return d


@pytest.fixture(scope="session")
def engine_loop(build_dir):
    return build_dir / "tests" / "tools" / "engine_loop"
