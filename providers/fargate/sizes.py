"""Fargate's task sizes: the published CPU/memory combinations, and the smallest that fits a pod.

CPU in ECS units (1024 = 1 vCPU), memory in MiB, as RegisterTaskDefinition takes them
(https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
"""

from __future__ import annotations

import dataclasses

GIB = 1024


def _steps(low_gib: int, high_gib: int, step_gib: int) -> tuple[int, ...]:
    return tuple(gib * GIB for gib in range(low_gib, high_gib + 1, step_gib))


# cpu units -> the memory sizes (MiB) Fargate accepts with it
SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1 * GIB, 2 * GIB),
    512: _steps(1, 4, 1),
    1024: _steps(2, 8, 1),
    2048: _steps(4, 16, 1),
    4096: _steps(8, 30, 1),
    8192: _steps(16, 60, 4),
    16384: _steps(32, 120, 8),
}


@dataclasses.dataclass(frozen=True)
class TaskSize:
    cpu: int  # ECS units
    memory: int  # MiB

    def __str__(self) -> str:
        return f"{self.cpu / 1024:g} vCPU / {self.memory / GIB:g} GiB"


def smallest_fitting(cpu_units: float, memory_mib: float) -> TaskSize | None:
    """The smallest size (by CPU, then memory) with at least ``cpu_units`` and ``memory_mib``;
    None when no Fargate size is that large."""
    for cpu in sorted(SIZES):
        if cpu < cpu_units:
            continue
        for memory in SIZES[cpu]:
            if memory >= memory_mib:
                return TaskSize(cpu, memory)
    return None


LARGEST = TaskSize(16384, 120 * GIB)
