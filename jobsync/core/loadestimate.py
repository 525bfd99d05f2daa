# Law: a token's load is the rate of work it brings, in cost per second,
# estimated as a decayed sum: sum(cost * 2 ** -(age / half_life)) over what
# it cost (a completed claim's duration, or an explicit cost).  A token
# costing r per second steadily makes that sum tend to r * half_life / ln 2,
# so `rates` divides it back out; a change of rate is half-way reflected
# after one half-life.  The value is pure: `observe` returns a new estimate,
# batches commute (up to rounding), time going backwards decays nothing and
# an observation dated after `now` counts at `now`.
"""A decayed per-token load estimate (the input `jobsync.core.loadbalance` balances)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from jobsync.core.errors import InvalidArgument
from jobsync.core.hashing import validate_total_tokens


def check_load(token: int, value: object) -> float:
    """``value`` as a float if it is a finite number >= 0; else InvalidArgument naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"load of token {token} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"load of token {token} must be finite and >= 0, got {value!r}")
    return float(value)


def check_cost(value: object) -> float | None:
    """An explicit completion cost: None, or a positive finite number (as a float);
    else InvalidArgument naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"cost must be a positive finite number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"cost must be a positive finite number, got {value!r}")
    return float(value)


@attrs.frozen(kw_only=True)
class LoadEstimate:
    """A decayed per-token load estimate, as a value: ``observe`` returns a new one.

    Each token keeps ``sum(cost * 2 ** -(age / half_life))`` over what it
    cost (a completed claim's duration, or an explicit cost), aged from when
    it was observed.  For a token costing ``r`` per second steadily, that
    sum tends to ``r * half_life / ln 2``, so `rates` divides it back out:
    the estimate is a load in the unit of cost per second.  Times are
    seconds on one clock; an observation dated after ``now`` counts at
    ``now``, and time going backwards decays nothing.
    """

    half_life: float
    at: float
    sums: tuple[float, ...]

    @classmethod
    def empty(cls, total_tokens: int, half_life: float, at: float = 0.0) -> LoadEstimate:
        total = validate_total_tokens(total_tokens)
        if isinstance(half_life, bool) or not isinstance(half_life, (int, float)):
            raise InvalidArgument(f"half_life must be a number of seconds, got {half_life!r}")
        if not math.isfinite(half_life) or half_life <= 0:
            raise InvalidArgument(f"half_life must be finite and > 0, got {half_life!r}")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            raise InvalidArgument(f"at must be a finite time in seconds, got {at!r}")
        return cls(half_life=float(half_life), at=float(at), sums=(0.0,) * total)

    @property
    def measured(self) -> bool:
        """Whether any cost was ever observed (and has not decayed to nothing)."""
        return any(self.sums)

    def observe(self, now: float, costs: Iterable[tuple[int, float, float]]) -> LoadEstimate:
        """The estimate at ``now`` after the ``(token, cost, when)`` observations."""
        now = _time("now", now)
        when0 = max(now, self.at)
        factor = 0.5 ** ((when0 - self.at) / self.half_life)
        sums = [s * factor for s in self.sums]
        for item in costs:
            token, cost, when = item
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < len(sums):
                raise InvalidArgument(f"cost for token {token!r}: not in range 0..{len(sums) - 1}")
            cost = check_load(token, cost)
            age = max(0.0, when0 - min(_time("when", when), when0))
            sums[token] += cost * 0.5 ** (age / self.half_life)
        return LoadEstimate(half_life=self.half_life, at=when0, sums=tuple(sums))

    def rates(self, now: float | None = None) -> tuple[float, ...]:
        """Each token's estimated load (cost per second), decayed to ``now``."""
        at = self.at if now is None else max(_time("now", now), self.at)
        scale = 0.5 ** ((at - self.at) / self.half_life) * math.log(2) / self.half_life
        return tuple(s * scale for s in self.sums)


def _time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite time in seconds, got {value!r}")
    return float(value)
