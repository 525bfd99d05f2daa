# Law: the simulator's public surface; nothing here needs pytest, and running a
# scenario never touches real time, threads or the network.
"""Deterministic simulation of a jobsync cluster (virtual time, seeded faults).

Run the real ``Node`` of many workers in one process under a virtual clock,
inject faults from one seed, and check the invariants of docs/PROTOCOL.md section 7
after every event::

    from jobsync.sim import make_spec, run_scenario
    result = run_scenario(make_spec(seed=42))
    assert result.ok, result.violation

or script a cluster yourself with ``VirtualCluster`` (see its docstring), or
from a shell: ``python -m jobsync.sim --seed 42`` and ``--soak 60``.
"""

from jobsync.sim.cluster import LocalClock, SimNode, VirtualCluster
from jobsync.sim.errors import InvariantViolation
from jobsync.sim.scenario import Result, Spec, make_spec, run_scenario, run_seed
from jobsync.sim.workload import SimJob, TaskBoard, User, UserLoop

__all__ = [
    "InvariantViolation",
    "LocalClock",
    "Result",
    "SimJob",
    "SimNode",
    "Spec",
    "TaskBoard",
    "User",
    "UserLoop",
    "VirtualCluster",
    "make_spec",
    "run_scenario",
    "run_seed",
]
