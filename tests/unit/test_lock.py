"""requirements.lock, which `make setup` installs exactly (`uv pip sync`), against pyproject.toml and the
packages installed from it. Offline: the metadata of the installed packages is all they read."""

import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.harness import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def lock_lines() -> list[Requirement]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def pins(environment: dict[str, str] | None = None) -> dict[str, str]:
    """Name → pinned version of the lines whose markers hold here (the lock is universal: a package of
    another platform, or one pinned per Python version, carries a marker)."""
    return {
        canonicalize_name(req.name): next(iter(req.specifier)).version
        for req in lock_lines()
        if req.marker is None or req.marker.evaluate(environment)
    }


def test_the_lock_pins_every_requirement_of_the_project_and_its_extras():
    # `make setup`'s `uv pip check` finds a dependency missing from the lock, but not an extra's: this
    # finds a pyproject.toml edited without `make lock`.
    locked = pins()
    wanted = PROJECT["dependencies"] + [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    problems = []
    for req in map(Requirement, wanted):
        name = canonicalize_name(req.name)
        if name == canonicalize_name(PROJECT["name"]):
            continue  # the test extra names the server extra
        if name not in locked:
            problems.append(f"{req}: not in requirements.lock")
        elif not req.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{req}: locked at {locked[name]}")
    assert problems == [], "run `make lock`: " + "; ".join(problems)


def test_no_locked_package_refuses_a_python_the_project_allows():
    # pip's freeze of a 3.11.7 environment locked pymdown-extensions 13.1.2, which needs 3.11.5: the
    # install failed on Debian 12's 3.11.2. At the oldest Python the project allows, every line that
    # applies must name a release that installs there.
    oldest = Version(next(s.version for s in SpecifierSet(PROJECT["requires-python"]) if s.operator == ">="))
    full = f"{oldest.major}.{oldest.minor}.{oldest.micro}"
    at_oldest = pins({"python_version": f"{oldest.major}.{oldest.minor}", "python_full_version": full})
    refused = []
    for name, version in at_oldest.items():
        try:
            needs = metadata.metadata(name).get_all("Requires-Python") or []
        except metadata.PackageNotFoundError:
            continue  # pinned for the oldest Python only: its metadata is not here to read
        if metadata.version(name) == version and any(not SpecifierSet(n).contains(full) for n in needs):
            refused.append(f"{name}=={version} needs Python {', '.join(needs)}")
    assert refused == [], f"requirements.lock at Python {full}: " + "; ".join(refused) + "; run `make lock`"
