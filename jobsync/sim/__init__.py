"""Deterministic simulation of a jobsync cluster (virtual time, seeded faults)."""

from jobsync.sim.cluster import InvariantViolation, LocalClock, VirtualCluster

__all__ = ["InvariantViolation", "LocalClock", "VirtualCluster"]
