"""Every package of the serving install is pinned in constraints.txt, to the version installed and tested here."""

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def serving_closure() -> dict[str, str]:
    """The installed packages ``.[serve]`` pulls in, with their versions (the extra's requirements, recursively)."""
    own = distribution("openset").requires or []
    stack = [name(r) for r in own if 'extra == "serve"' in r or "extra ==" not in r]
    found: dict[str, str] = {}
    while stack:
        package = stack.pop()
        if package in found:
            continue
        try:
            dist = distribution(package)
        except PackageNotFoundError:  # (a marker that excludes it here, e.g. uvloop on Windows)
            continue
        found[package] = dist.version
        stack += [name(r) for r in dist.requires or [] if "extra ==" not in r]
    return found


def test_every_serving_package_is_pinned_to_the_installed_version():
    lines = (line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    pins = {name(package): version.strip() for package, version in (line.split("==") for line in lines if line)}
    closure = serving_closure()
    assert {"uvicorn", "fastapi", "starlette", "onnxruntime", "pillow", "numpy"} <= set(closure)
    unpinned = sorted(set(closure) - set(pins))
    assert not unpinned, f"pin these in constraints.txt: {unpinned}"
    assert {p: v for p, v in closure.items() if pins[p] != v} == {}
