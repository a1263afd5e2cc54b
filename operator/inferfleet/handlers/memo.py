"""kopf's memo carries one thing: the operator's runtime (runtime/operator.py)."""

from __future__ import annotations

import kopf

from inferfleet.runtime.operator import OperatorRuntime


def runtime_of(memo: kopf.Memo) -> OperatorRuntime:
    runtime: OperatorRuntime = memo["runtime"]
    return runtime
