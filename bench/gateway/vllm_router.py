"""vllm-router (vLLM production-stack's Rust router, on PyPI) in its own venv under the cache.

Not in the project's .venv: it pins pydantic 2.14.4 and other versions of its own. The version is
`VLLM_ROUTER_VERSION` in hack/versions.env; the venv is `<cache>/vllm-router/<version>` (the cache is
$INFERFLEET_CACHE or .cache). `python -m bench.gateway.vllm_router` installs it and prints its path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from inferfleet.localcluster.paths import cache_dir, pinned_versions

PACKAGE = "vllm-router"
INSTALLED = ".installed"


def pinned_version() -> str:
    return pinned_versions()["VLLM_ROUTER_VERSION"]


def venv_dir(version: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "vllm-router" / version


def executable(version: str, cache: Path | None = None) -> Path:
    return venv_dir(version, cache) / "bin" / "vllm-router"


def install(version: str | None = None, cache: Path | None = None) -> Path:
    """The `vllm-router` launcher of the pinned version, installed first if it is missing.

    A marker file is written last, so a venv left by an interrupted install is rebuilt, not used.
    """
    version = version or pinned_version()
    venv = venv_dir(version, cache)
    marker = venv / INSTALLED
    if marker.is_file():
        return executable(version, cache)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{PACKAGE}=={version}"], check=True)
    marker.write_text(f"{PACKAGE}=={version}\n")
    return executable(version, cache)


def main() -> int:
    print(install())
    return 0


if __name__ == "__main__":
    sys.exit(main())
