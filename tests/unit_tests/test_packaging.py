"""The distributions as users and packagers get them: built offline from this checkout."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

pytest.importorskip("build")

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return {"sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def test_the_sdist_carries_the_tests_with_what_they_need(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert "tests/conftest.py" in names
    assert "tests/test_notebooks.py" in names
    assert {"notebooks/quickstart.ipynb", "notebooks/router.ipynb"} <= names
    assert any(name.startswith("cassettes/") and name.endswith(".yaml") for name in names)
    assert not any("__pycache__" in name for name in names)


def test_the_wheel_holds_the_package_only(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        tops = {name.split("/", 1)[0] for name in wheel.namelist()}
        assert "langchain_g4f/py.typed" in wheel.namelist()
    assert {top for top in tops if not top.endswith(".dist-info")} == {"langchain_g4f"}


def test_the_metadata_names_every_supported_python(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(wheel.read(meta_name).decode())
    classifiers = meta.get_all("Classifier") or []
    assert meta["Requires-Python"] == f">={SUPPORTED[0]}"
    for version in SUPPORTED:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
