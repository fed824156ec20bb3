"""The install: constraints.txt pins exactly what pyproject.toml asks for (and what it pulls in),
this environment holds those versions, and a runtime-only install from the pins runs the demo."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# come with every venv (ensurepip) and are left to it, as `pip freeze` leaves them out
VENV_TOOLS = frozenset({"pip", "setuptools"})


def _pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every entry must be an exact ``==`` pin."""
    pins: dict[str, str] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, \
            f"constraints.txt:{n}: {line!r} is not an exact name==version pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"constraints.txt:{n}: {req.name} pinned twice"
        pins[name] = spec[0].version
    return pins


def _requirements(extra: str | None = None) -> list[Requirement]:
    """pyproject.toml's runtime dependencies, or those of an optional extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in (project["optional-dependencies"][extra] if extra else project["dependencies"])]


def _closure(roots: list[Requirement]) -> set[str]:
    """Canonical names of ``roots`` and everything they require here, transitively, with
    extras and environment markers applied as pip applies them."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    stack = list(roots)
    while stack:
        req = stack.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        for text in md.distribution(req.name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**default_environment(), "extra": e})
                                         for e in ("", *req.extras)):
                stack.append(dep)
    return names


def test_constraints_pin_every_dependency_at_the_installed_version():
    pins = _pins()
    runtime, test = _requirements(), _requirements("test")
    for req in runtime + test:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
    # what pip resolves for the runtime install (and the test install) is pinned as installed here
    needed = _closure(runtime) | _closure(test)
    unpinned = sorted(needed - pins.keys() - VENV_TOOLS)
    assert not unpinned, f"installed dependencies missing from constraints.txt: {unpinned}"
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
    wrong = {n: (installed[n], v) for n, v in pins.items() if n in installed and installed[n] != v}
    assert not wrong, f"installed versions differ from constraints.txt (installed, pinned): {wrong}"
    assert "pyturbojpeg" not in _closure(runtime), "the runtime needs no system libjpeg-turbo binding"


@pytest.fixture
def venv(tmp_path):
    """An empty venv in ``tmp_path``, removed afterwards (a runtime install is over 1 GB)."""
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_runtime_install_from_the_pins_runs_the_demo(tmp_path, venv):
    # the runtime install alone (no test extra) from a copy of the repository, as pip
    # installs it for a user, then the README's first command without the server
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.egg-info")
    for name in ("engine", "formats", "server"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*cmd: str | Path) -> str:
        done = subprocess.run([str(c) for c in cmd], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done.stdout

    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
        "-c", src / "constraints.txt", src)
    listed = json.loads(run(py, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"))
    got = {canonicalize_name(d["name"]): d["version"] for d in listed}
    assert "fathom3d" in got and "simplejpeg" in got
    assert not {"pytest", "pyturbojpeg", "opencv-python-headless"} & got.keys()
    pins = _pins()
    off = {n: (v, pins.get(n)) for n, v in got.items() if n not in {"fathom3d", *VENV_TOOLS} and pins.get(n) != v}
    assert not off, f"the runtime install resolved other versions than constraints.txt (got, pinned): {off}"
    # the viewer's files are part of the package
    run(py, "-c", "from server.routes.viewer import STATIC; assert (STATIC / 'viewer.html').is_file(), STATIC")

    work = tmp_path / "demo"
    run(venv / "bin" / "fathom", "demo", "--no-serve", "--duration", "1", "--workdir", work)
    log = json.loads((work / "log" / "log.json").read_text())
    scene_dir = work / "scenes" / "road-0"
    scene = json.loads((scene_dir / "scene.json").read_text())
    assert len(scene["frames"]) == len(log["frames"]) > 0
    for frame in scene["frames"]:
        assert (scene_dir / frame["points"]["file"]).stat().st_size == frame["points"]["bytes"] > 0
        assert frame["images"], "the demo's camera images were not prepared"
        for image in frame["images"].values():
            assert (scene_dir / image["file"]).stat().st_size == image["bytes"] > 0
