"""A node's agenda as data: what it wants done, when, and why.

The node (``runtime/node.py``) keeps everything it has to do later here
instead of in loose flags and instants.  Each entry is named and carries the
reason it was set, so a tick can say why it ran and the simulator can print
it.  Pure: no clock, no I/O; the caller passes ``now``.

An entry is one *slot* with up to three parts:

- a *want*: do this at the next tick (``want``, dropped by ``met``);
- a *timer*: do this once ``now`` reaches an instant (``at``, ``cancel``);
  a quiet timer (``wakes=False``) is due like any other but never wakes
  the node by itself: it is only looked at when something else runs;
- a *gate*: not before an instant, whatever the want or timer say
  (``not_before``).

A slot is due (``is_due``) when its gate has passed and it is wanted or its
timer has come.  A want masks its own slot's timer: a wanted slot wakes
the node now (or when its gate opens), never at its timer.  On top of the
slots, a *backoff* (``defer``) holds everything back after a failed step:
while it lasts the node wakes only at its end.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

import attrs

NEVER = math.inf
ALWAYS = -math.inf


@attrs.frozen
class Wake:
    """Why a tick ran: the instant and each due slot with its reason."""

    at: float
    due: tuple[tuple[str, str], ...]
    backoff: bool = False

    def __str__(self) -> str:
        if not self.due:
            return f"woke at {self.at:.3f} with nothing due" + (
                " (backoff)" if self.backoff else ""
            )
        reasons = ", ".join(f"{name} ({why})" for name, why in self.due)
        return f"woke at {self.at:.3f} for {reasons}"


class Agenda:
    """Named wants, timers and gates, each with its reason (see the module docstring)."""

    def __init__(self) -> None:
        self._wants: dict[str, str] = {}
        self._timers: dict[str, tuple[float, str]] = {}
        self._gates: dict[str, tuple[float, str]] = {}
        self._quiet: set[str] = set()
        self._backoff: tuple[float, str] = (ALWAYS, "")
        self._noted: tuple[float, Agenda] | None = None

    # -- wants ----------------------------------------------------------------
    def want(self, name: str, *, reason: str) -> None:
        """Do ``name`` at the next tick (an earlier reason is kept)."""
        self._wants.setdefault(name, reason)

    def met(self, name: str) -> None:
        """The want of ``name`` is satisfied (its timer, if any, stays)."""
        self._wants.pop(name, None)

    def wanted(self, name: str) -> bool:
        return name in self._wants

    # -- timers -----------------------------------------------------------------
    def at(self, name: str, when: float, *, reason: str, wakes: bool = True) -> None:
        """Set (or move) the timer of ``name`` to ``when``; ``NEVER`` cancels it."""
        if when == NEVER:
            self.cancel(name)
            return
        self._timers[name] = (when, reason)
        if wakes:
            self._quiet.discard(name)
        else:
            self._quiet.add(name)

    def cancel(self, name: str) -> None:
        self._timers.pop(name, None)
        self._quiet.discard(name)

    def when(self, name: str) -> float:
        """The timer of ``name``, or ``NEVER``."""
        timer = self._timers.get(name)
        return NEVER if timer is None else timer[0]

    # -- gates and backoff --------------------------------------------------------
    def not_before(self, name: str, until: float, *, reason: str) -> None:
        """Hold ``name`` back until ``until`` (``ALWAYS`` lifts the gate)."""
        if until == ALWAYS:
            self._gates.pop(name, None)
        else:
            self._gates[name] = (until, reason)

    def gate(self, name: str) -> float:
        gate = self._gates.get(name)
        return ALWAYS if gate is None else gate[0]

    def defer(self, until: float, *, reason: str) -> None:
        """Back off: nothing is due before ``until``."""
        self._backoff = (until, reason)

    def deferred(self, now: float) -> bool:
        return now < self._backoff[0]

    def resume(self) -> None:
        """End the backoff (a step may set a new one)."""
        self._backoff = (ALWAYS, "")

    # -- reading the agenda ---------------------------------------------------------
    def is_due(self, name: str, now: float) -> bool:
        """``name``'s gate has passed and it is wanted or its timer has come."""
        if self.gate(name) > now:
            return False
        return name in self._wants or self.when(name) <= now

    def due(self, now: float) -> tuple[str, ...]:
        """Every slot due at ``now``, by name."""
        return tuple(n for n in sorted({*self._wants, *self._timers}) if self.is_due(n, now))

    def next_wakeup(self, now: float, *, asleep: Collection[str] = ()) -> float:
        """The instant the node next has something to do, ignoring the slots in
        ``asleep`` and quiet timers: the backoff's end while it lasts, ``now``
        if a slot is wanted and ungated, else the earliest timer or gate end."""
        if self._backoff[0] > now:
            return self._backoff[0]
        soonest = NEVER
        for name in self._names(asleep):
            gate = self.gate(name)
            if name in self._wants:
                if gate <= now:
                    return now
                soonest = min(soonest, gate)
            elif name not in self._quiet:
                soonest = min(soonest, max(self.when(name), gate))
        return soonest

    def _names(self, asleep: Collection[str]) -> Iterable[str]:
        return (n for n in {*self._wants, *self._timers} if n not in asleep)

    def note(self, now: float) -> None:
        """Keep what the agenda holds at ``now`` (cheap: copies of a few small dicts),
        so ``last_wake`` can say why this tick ran."""
        noted = Agenda()
        noted._wants = dict(self._wants)
        noted._timers = dict(self._timers)
        noted._gates = dict(self._gates)
        noted._backoff = self._backoff
        self._noted = (now, noted)

    @property
    def last_wake(self) -> Wake | None:
        """Why the tick of the latest ``note`` ran (None before the first)."""
        if self._noted is None:
            return None
        now, noted = self._noted
        return noted.record(now)

    def record(self, now: float) -> Wake:
        """What is due at ``now`` and why: the reasons a tick at ``now`` runs."""
        if self.deferred(now):
            return Wake(now, (("backoff", self._backoff[1]),), backoff=True)
        return Wake(now, tuple((name, self.reason(name, now)) for name in self.due(now)))

    def reason(self, name: str, now: float) -> str:
        """Why ``name`` is on the agenda: its want's reason, else its timer's."""
        if name in self._wants:
            return self._wants[name]
        timer = self._timers.get(name)
        if timer is None:
            return ""
        return timer[1] if timer[0] <= now else f"{timer[1]} at {timer[0]:.3f}"

    def describe(self) -> dict[str, str]:
        """Every entry in words (for status pages and the simulator's traces)."""
        out: dict[str, str] = {}
        for name in sorted({*self._wants, *self._timers, *self._gates}):
            parts = []
            if name in self._wants:
                parts.append(f"wanted: {self._wants[name]}")
            if name in self._timers:
                when, why = self._timers[name]
                parts.append(f"at {when:.3f}: {why}" + (" (quiet)" if name in self._quiet else ""))
            if name in self._gates:
                until, why = self._gates[name]
                parts.append(f"not before {until:.3f}: {why}")
            out[name] = "; ".join(parts)
        if self._backoff[0] != ALWAYS:
            out["backoff"] = f"until {self._backoff[0]:.3f}: {self._backoff[1]}"
        return out
