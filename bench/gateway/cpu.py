"""CPU time of a process and its descendants from /proc, and of the whole machine."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat this benchmark reads."""

    pid: int
    ppid: int
    utime: int
    stime: int
    """Clock ticks this process spent in user and kernel mode, all its threads."""


def parse_stat(text: str) -> Stat:
    """/proc/<pid>/stat: `pid (comm) state ppid ...`; comm may hold spaces and parentheses."""
    pid = int(text[: text.index(" ")])
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is 4, utime 14, stime 15
    return Stat(pid=pid, ppid=int(fields[1]), utime=int(fields[11]), stime=int(fields[12]))


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, from a pid → ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def read_stats(proc: Path = PROC) -> dict[int, Stat]:
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError):
                continue  # gone between the listing and the read
    return stats


def tree_cpu_seconds(root: int, stats: Mapping[int, Stat]) -> float:
    """User + system CPU seconds of `root` and its live descendants.

    Children that already exited are not counted (their time is in the parent's cutime only once
    reaped); the proxies here run their work in one process and its threads.
    """
    tree = descendants(root, {pid: s.ppid for pid, s in stats.items()})
    return sum(stats[p].utime + stats[p].stime for p in tree if p in stats) / CLOCK_TICKS


def process_cpu_seconds(pids: list[int], proc: Path = PROC) -> float:
    """CPU seconds of each pid's process tree, summed."""
    stats = read_stats(proc)
    return sum(tree_cpu_seconds(pid, stats) for pid in pids)


@dataclass(frozen=True)
class MachineTimes:
    busy: float
    total: float
    """Seconds summed over all CPUs (busy excludes idle and iowait)."""


def parse_proc_stat(text: str) -> MachineTimes:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    line = next(line for line in text.splitlines() if line.startswith("cpu "))
    values = [int(v) for v in line.split()[1:9]]
    idle = values[3] + values[4]
    return MachineTimes(busy=(sum(values) - idle) / CLOCK_TICKS, total=sum(values) / CLOCK_TICKS)


def machine_times(proc: Path = PROC) -> MachineTimes:
    return parse_proc_stat((proc / "stat").read_text())
