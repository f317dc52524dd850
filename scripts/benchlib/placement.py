"""Which CPU runs what, on a 2-core machine where the load generator needs a core of its own.

The rule of the harness is that the server's core measures the server alone: the server runs on
CPU 0, and the generator, PostgreSQL and Redis on CPU 1. Two cases cannot keep that rule:

`--processes N` / `--compare-processes` (does a second process add capacity?). There is no third
core, so `--cpu-share` says what the N > 1 runs get (1 process always runs on CPU 0 alone):

- `spread`: CPUs 0-1, the second core shared with the generator, PostgreSQL, Redis and the
  kernel's loopback work. This is what "run 2 processes on this machine" gives; the runs report
  every CPU's use so the reader sees the sharing. The ratio is bounded by the machine: at
  ~100,000 deliveries/s the generator alone needs ~60 % of CPU 1.
- `one-core`: CPU 0 only, the same core the 1-process run had. The ratio then says whether
  splitting the work across processes costs CPU (per-core efficiency), not how it scales.
- `both` (default): one run of each, so the report shows the measured spread ratio and the
  per-core efficiency side by side.
- `budget`: every run, the 1-process one included, gives each worker process a CPU budget of
  `--cpu-budget` cores (a CFS quota, `cpubudget.py`) instead of a core; nothing is pinned. This
  emulates a machine with a core per process and cores left for the generator, so the ratio
  says how the server scales, at the cost of absolute numbers (each process has a fraction of
  a core).

(An earlier attempt gave each process an "equal share" of CPU 0 by running busy-loop processes
next to the 1-process run; the scheduler's time slices then added >100 ms to its p99 at a third
of its share, so the comparison measured the scheduler. Not used.)

`--scenario crossinstance` (two instances): `--cross-pin split` (default) runs instance A on
CPU 0 and B on CPU 1 next to the generator, so that B's work on a message runs in parallel with
A's as it would on two hosts; `same` puts both on CPU 0, where B waits for A's fan-out to
finish before it gets the CPU, which adds A's fan-out time to every cross-instance delivery.
In `split`, B still waits for the generator, which at that moment is reading A's copies of the
same message on CPU 1: `split-priority` runs the generator at nice 10, so B (nice 0) preempts
it as soon as its event arrives from Redis, as if B had a host of its own. The generator's
reads of both instances' copies are delayed alike while B writes.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVER_CPU = "0"
GENERATOR_CPU = "1"
SERVICES_CPU = 1  # PostgreSQL and Redis share the generator's core


@dataclass(frozen=True)
class Placement:
    instance_cpus: tuple[str, ...] = (SERVER_CPU,)  # taskset list for each server instance
    note: str = "server on CPU 0"
    share: str = ""  # "spread", "one-core" or "budget" for runs of several processes
    generator_nice: int = 0  # > 0: the generator yields its CPU to the servers sharing it
    cpu_budget: float = 0.0  # cores per worker process (CFS quota); 0: no quota

    @property
    def generator_cpu(self) -> str:
        # under budgets nothing is pinned: the generator takes whatever the quotas leave
        return "0,1" if self.cpu_budget else GENERATOR_CPU


def shares(share: str) -> list[str]:
    """The placements N > 1 processes are measured with, for `--cpu-share`."""
    return ["spread", "one-core"] if share == "both" else [share]


def for_budget(n: int, budget: float) -> Placement:
    """`n` worker processes, each held to `budget` of a core, nothing pinned."""
    return Placement(instance_cpus=("0,1",), share="budget", cpu_budget=budget,
                     note=f"{n} process{'es' if n > 1 else ''} with {budget:g} of a core each "
                          "(CFS quota), nothing pinned")


def for_processes(n: int, share: str) -> Placement:
    """Where `n` worker processes run (share: "spread" or "one-core")."""
    if n == 1:
        return Placement(note="1 process on CPU 0")
    if share == "one-core":
        return Placement(note=f"{n} processes on CPU 0 only (per-core efficiency)",
                         share=share)
    return Placement(instance_cpus=("0,1",),
                     note=f"{n} processes on CPUs 0-1; CPU 1 shared with the generator, "
                          "PostgreSQL and Redis", share="spread")


def for_instances(pin: str) -> Placement:
    """Two single-process instances for the crossinstance scenario."""
    if pin == "same":
        return Placement(instance_cpus=("0", "0"), note="instances A and B both on CPU 0")
    if pin == "split-priority":
        return Placement(instance_cpus=("0", "1"), generator_nice=10,
                         note="instance A on CPU 0, instance B on CPU 1 ahead of the generator "
                              "(nice 10), PostgreSQL and Redis")
    return Placement(instance_cpus=("0", "1"),
                     note="instance A on CPU 0, instance B on CPU 1 (shared with the generator, "
                          "PostgreSQL and Redis)")
