# Law: one simulated process is one Node, one connection, one local clock and
# one fate.  Its clock reads ``offset + rate * true`` and only ever jumps
# forward (a suspend counted by CLOCK_BOOTTIME); converting a local deadline
# back to true time never lands before the deadline, so a node is never woken
# early and left spinning.  A crashed process answers nothing and never runs
# again; a new process of the same name is a new SimNode.
"""A simulated worker process: its clock and its state in the simulation."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from jobsync.core.lifecycle import TERMINAL
from jobsync.runtime.node import Node, Signal
from jobsync.sim.store import SimBackend

if TYPE_CHECKING:
    from jobsync.sim.workload import User

CONSUMERS = ("fast", "slow", "raising")
"""How a node's rebalance events are consumed: every tick, rarely, or by a raising callback."""


@attrs.define
class LocalClock:
    """A node's view of time: ``offset + rate * true``; suspends jump it forward."""

    offset: float = 0.0
    rate: float = 1.0

    def read(self, true_now: float) -> float:
        return self.offset + self.rate * true_now

    def to_true(self, local: float) -> float:
        """The earliest true instant at which this clock reads at least ``local``."""
        true = (local - self.offset) / self.rate
        while self.read(true) < local:  # rounding: never wake a node before its deadline
            true = math.nextafter(true, math.inf)
        return true


@attrs.define(eq=False)
class SimNode:
    """One simulated process: a Node, its connection, its clock and its fate."""

    name: str
    key: str
    node: Node
    handle: SimBackend
    clock: LocalClock
    born: int
    wake: float = math.inf
    paused_until: float = 0.0
    crashed: bool = False
    leaving: bool = False
    """A drain was requested (the node learns it at its next tick)."""
    signals: list[Signal] = attrs.Factory(list)
    consumer: str = "fast"
    consume_at: float = 0.0
    notify_delay: float = 0.0
    notify_pending: bool = False
    missed_notify: bool = False
    user: User | None = None
    user_wake: float = math.inf
    callback_errors: int = 0
    exited: bool = False
    """Ended by itself after SIGTERM (``crashed`` is also set: it runs no more)."""

    @property
    def client(self) -> str:
        return self.handle.client

    @property
    def running(self) -> bool:
        """Not crashed and not stopped: the process still exists and ticks."""
        return not self.crashed and self.node.state not in TERMINAL
