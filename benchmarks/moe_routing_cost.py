"""Measure what the moe_routing suite adds to a run: the same run with and without it, in one invocation.

Usage: python benchmarks/moe_routing_cost.py [harness run arguments...]

Runs `harness run --suites parity` and then `harness run --suites parity,moe_routing` in
child processes with the same arguments (for example `--cases tag:moe`, the only cases the
suite applies to), and prints the wall time and CPU time of each, their difference and their
ratio. Run it once beforehand so that neither run pays for building the tiny models.
"""

from __future__ import annotations

import os
import sys

from fp16_overflow_cost import timed_run


def main(arguments: list[str]) -> int:
    without_wall, without_cpu, without_status = timed_run(["--suites", "parity", *arguments])
    with_wall, with_cpu, with_status = timed_run(["--suites", "parity,moe_routing", *arguments])

    print(f"arguments: {' '.join(arguments) or '(defaults)'}")
    print(f"cpu cores: {os.cpu_count()}")
    print(f"parity only: wall {without_wall:.0f} s, cpu {without_cpu:.0f} s, exit status {without_status}")
    print(f"parity + moe_routing: wall {with_wall:.0f} s, cpu {with_cpu:.0f} s, exit status {with_status}")
    print(f"added by moe_routing: wall {with_wall - without_wall:.0f} s, cpu {with_cpu - without_cpu:.0f} s")
    print(f"ratio with / without: wall {with_wall / without_wall:.2f}, cpu {with_cpu / without_cpu:.2f}")
    return with_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
