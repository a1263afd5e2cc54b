"""Run the naive baseline operator as a background process, like OperatorProcess runs inferfleet."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from inferfleet.localcluster.operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]


def repo_on_path_env() -> dict[str, str]:
    """The repository on PYTHONPATH, so `bench` imports from any working directory."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@dataclass
class NaiveOperatorProcess(OperatorProcess):
    def __post_init__(self) -> None:
        self.env = repo_on_path_env() | self.env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.reconcile.naive_operator", "--kubeconfig", str(self.kubeconfig),
                "--liveness", self.liveness_url, "--metrics-port", str(self.metrics_port),
                "--verbose"]  # fmt: skip  # as OperatorProcess runs inferfleet: the same log level
