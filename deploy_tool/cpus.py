"""CPU lists as taskset and Docker's cpuset take them ("0", "0-1", "0,2-3"): the lab hosts' (`deploy lab up
--cpus`) and the benchmark client's (`deploy bench --client-cpus`)."""

from __future__ import annotations

import re

CPU_LIST = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")  # ASCII digits (\d takes others)


def cpu_set(text: str) -> set[int]:
    """The CPUs a list names; ValueError when it is not one (or a range runs backwards)."""
    if not CPU_LIST.fullmatch(text):
        raise ValueError(f"not a CPU list: {text!r}")
    named: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise ValueError(f"a range runs backwards: {part}")
        named.update(range(int(low), int(high or low) + 1))
    return named


def cpu_text(cpus: set[int]) -> str:
    """The shortest list naming `cpus` (0-1,3)."""
    ordered, parts = sorted(cpus), []
    while ordered:
        low = high = ordered.pop(0)
        while ordered and ordered[0] == high + 1:
            high = ordered.pop(0)
        parts.append(str(low) if low == high else f"{low}-{high}")
    return ",".join(parts)
