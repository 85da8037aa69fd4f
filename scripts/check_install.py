"""Installs voxray non-editably into a clean venv and imports every module from there.

pyproject maps the design card's folders (ua_node/, deployments/, providers/,
cluster/) into `voxray.*` with a hand-kept package list; an editable install hides
a package left off it. Here the built wheel is the only voxray the interpreter can
see (dependencies come from .venv, read-only), every module of the source tree
must be in it, and each must import.

    .venv/bin/python scripts/check_install.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"voxray": "voxray", "ua_node": "voxray.ua_node", "deployments": "voxray.deployments",
           "providers": "voxray.providers", "cluster": "voxray.cluster"}

PROBE = r"""
import importlib, json, pkgutil, sys
import voxray
out = {"voxray": voxray.__file__, "modules": [], "failed": {}}
for m in pkgutil.walk_packages(voxray.__path__, "voxray."):
    try:
        mod = importlib.import_module(m.name)
        out["modules"].append([m.name, getattr(mod, "__file__", "")])
    except Exception as exc:
        out["failed"][m.name] = repr(exc)[:300]
print(json.dumps(out))
"""


def source_modules() -> set[str]:
    names: set[str] = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            if folder == "voxray" and parts and parts[0] in ("ua_node", "deployments", "providers", "cluster"):
                continue
            if parts:
                names.add(".".join([package, *parts]))
    return names


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="voxray-install-check-"))
    # Built from a copy of the files git sees: a stale build/ folder in the checkout
    # would otherwise put packages into the wheel that pyproject no longer lists.
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    src = work / "src"
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(src)], check=True, stderr=subprocess.DEVNULL)
    wheel = next((work / "dist").glob("voxray-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    # Dependencies from this venv, as a plain path: its .pth files (the editable voxray) stay inactive.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], capture_output=True, text=True,
                           cwd=work, timeout=600)
    if probe.returncode != 0:
        print(probe.stderr[-3000:], file=sys.stderr)
        return 1
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    problems = []
    if not got["voxray"].startswith(str(site)):
        problems.append(f"voxray came from {got['voxray']}, not the installed wheel")
    outside = [name for name, f in got["modules"] if f and not f.startswith(str(site))]
    if outside:
        problems.append(f"modules imported from outside the wheel: {outside}")
    missing = sorted(source_modules() - {name for name, _ in got["modules"]} - set(got["failed"]))
    if missing:
        problems.append(f"in the source tree but not in the wheel (pyproject's package list?): {missing}")
    for name, error in got["failed"].items():
        problems.append(f"{name} does not import: {error}")
    for p in problems:
        print("check_install:", p, file=sys.stderr)
    if not problems:
        print(f"check_install: {len(got['modules'])} modules installed from {wheel.name} and imported")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
