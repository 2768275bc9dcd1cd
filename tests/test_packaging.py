"""What ``pip install kd`` (a wheel, not the clone) carries and asks for, read from pyproject.toml and
the tree: no build, no install."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("kdstore", "commands", "migrations")  # the top-level packages the wheel installs


def _requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = PYPROJECT["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {Requirement(s).name: Requirement(s) for s in specs}


def test_the_wheel_finds_every_package():
    setuptools = PYPROJECT["tool"]["setuptools"]
    include = setuptools["packages"]["find"]["include"]
    for name in PACKAGES:
        assert (ROOT / name / "__init__.py").is_file()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in include), name
    assert PYPROJECT["project"]["scripts"]["kd"] == "commands:main"


def test_the_wheel_carries_every_file_that_is_not_a_module():
    """The migration chain (``migrations/versions`` is a folder of scripts, not a package) and
    Alembic's template are package data: a wheel without them cannot create a store."""
    data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    for name in PACKAGES:
        package = ROOT / name
        for path in sorted(package.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
                continue
            rel = path.relative_to(package)
            if path.suffix == ".py" and (path.parent / "__init__.py").is_file():
                continue  # a module of the package: packages.find takes it
            assert any(fnmatch.fnmatch(rel.as_posix(), glob) for glob in data.get(name, [])), f"{name}/{rel} is not package data"
    assert list((ROOT / "migrations" / "versions").glob("0001_*.py"))
    assert (ROOT / "migrations" / "script.py.mako").is_file()


def test_migrations_are_found_beside_kdstore_not_on_sys_path(tmp_path):
    """``migrations`` is a name other projects use: an Alembic project's own package in the working
    directory (first on ``sys.path`` under ``python -m commands.cli`` or ``python -c``) is not run."""
    fake = tmp_path / "migrations"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "env.py").write_text("raise SystemExit('the working directory migrations ran')\n")
    code = (
        "import migrations, sys\n"
        "assert migrations.__file__.startswith(sys.argv[1]), migrations.__file__  # the impostor is importable\n"
        "from kdstore import migrate\n"
        "from kdstore.engine import make_engine\n"
        "engine = make_engine('sqlite:///' + sys.argv[1] + '/kd.db')\n"
        "migrate.upgrade(engine)\n"
        "print(migrate.script_location(), migrate.state(engine))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    location, state = done.stdout.split()
    assert Path(location) == ROOT / "migrations" and state == "current"


def test_the_license_named_is_the_license_shipped():
    """pyproject.toml said Apache-2.0 and the tree held no license text for a wheel to carry."""
    assert PYPROJECT["project"]["license"] == "Apache-2.0" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text and "END OF TERMS AND CONDITIONS" in text


def test_pyproject_version_is_kdstore_version():
    from kdstore import __version__

    assert PYPROJECT["project"]["version"] == __version__


def test_dependency_floors_cover_what_kd_and_its_tests_use():
    """torch.amp.GradScaler (kdstore.torchutil) is torch 2.3; the tests read ``result.stderr`` of a
    plain ``CliRunner()``, which click 8.1 refuses; tomllib is Python 3.11 (tomli before it)."""
    torch = _requirements()["torch"]
    assert torch.specifier and not torch.specifier.contains("2.2.2") and torch.specifier.contains("2.3.0")
    assert "==" not in str(torch.specifier)  # users bring their own build
    assert not _requirements("test")["click"].specifier.contains("8.1.8")
    tomli = _requirements()["tomli"]
    assert tomli.marker is not None and tomli.marker.evaluate({"python_version": "3.10"})
    assert not tomli.marker.evaluate({"python_version": "3.11"})
