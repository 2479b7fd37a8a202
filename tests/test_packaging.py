"""The wheel installs one import name, ``nightowl``, with every subpackage and bundled file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _packages_in_tree() -> set[str]:
    """Every folder with an __init__.py, named as the package-dir mapping installs it."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_the_package_list_names_every_package_in_the_tree():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _packages_in_tree()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools keeps a build/ folder beside the sources, whose leftovers
    # (a module since moved) would otherwise end up in the wheel.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(
            REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        check=True, capture_output=True, cwd=out,
    )  # fmt: skip
    (built,) = out.glob("nightowl-*.whl")
    return built


def test_the_wheel_installs_nightowl_and_no_other_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        top = {n.split("/")[0] for n in names}
        info = next(t for t in top if t.endswith(".dist-info"))
        assert top == {"nightowl", info}
        assert whl.read(f"{info}/top_level.txt").decode().split() == ["nightowl"]
        assert "nightowl = nightowl.cli:main" in whl.read(f"{info}/entry_points.txt").decode()
    for bundled in (
        "nightowl/tasks/report/report.html.j2",
        "nightowl/tasks/report/report_table.html.j2",
        "nightowl/demo/demo_faq.md",
    ):
        assert bundled in names


def test_from_the_wheel_nightowl_imports_and_tasks_does_not(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import nightowl.flows.graph, nightowl.tasks.report.page, nightowl.warehouse.store\n"
        "assert nightowl.flows.graph.__file__.startswith(sys.argv[1])\n"
        "from importlib import resources\n"
        "assert resources.files('nightowl.demo').joinpath('demo_faq.md').is_file()\n"
        "for name in ('tasks', 'flows', 'schemas', 'warehouse'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable')\n"
    )
    # -I: neither the working directory nor PYTHONPATH is on the path, as for a user's script.
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path)], capture_output=True, text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
