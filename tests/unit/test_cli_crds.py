import shutil
import subprocess
import sys
from pathlib import Path

from inferfleet.api.crd import CRD_FILENAME
from inferfleet.crdfiles import DEFAULT_CRD_DIR


def _crds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferfleet", "crds", *args], capture_output=True, text=True)


def test_crds_check_passes_on_the_committed_crds() -> None:
    result = _crds("--check")
    assert result.returncode == 0, result.stderr


def test_crds_check_fails_on_drift_and_regeneration_fixes_it(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_CRD_DIR, tmp_path, dirs_exist_ok=True)
    crd = tmp_path / CRD_FILENAME
    crd.write_text(crd.read_text().replace("infsvc", "isvc"))

    drifted = _crds("--check", "--output-dir", str(tmp_path))
    assert drifted.returncode == 1
    assert "out of date" in drifted.stderr

    assert _crds("--output-dir", str(tmp_path)).returncode == 0
    assert _crds("--check", "--output-dir", str(tmp_path)).returncode == 0
