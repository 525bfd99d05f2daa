"""How `jobsync.core.loadbalance` paces itself: the band, hysteresis, budget and cool-down.

Validated where built; `check_cooling` checks the per-token cool-down a
previous plan handed on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from jobsync.core.errors import InvalidArgument


def _fraction(name: str, value: float, *, upper: float, closed: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value > upper if closed else value >= upper):
        raise InvalidArgument(f"{name}={value!r} is outside 0..{upper}")
    return float(value)


@attrs.frozen(kw_only=True)
class LoadPolicy:
    """How `balance_load` paces itself; every field is validated.

    ``band``: the balance promised, no node above ``(1 + band)`` of its fair
    share.  ``margin``: room kept under the band for load to drift between
    plans: a node above ``1 + band - margin`` (its TRIGGER) starts a
    shedding.  ``hysteresis``: nodes then shed down to ``hysteresis`` under
    the trigger (the CEILING) and receivers fill only that far, so noise
    smaller than ``hysteresis`` moves nothing.  ``budget``: load moves per
    plan, a fraction of the tokens (at least one).  ``cooldown``: plans a
    moved token sits out before a load move may take it again.
    """

    band: float = 0.10
    margin: float = 0.03
    hysteresis: float = 0.04
    budget: float = 0.02
    cooldown: int = 3

    def __attrs_post_init__(self) -> None:
        band = _fraction("band", self.band, upper=10.0)
        if band <= 0:
            raise InvalidArgument(f"band must be positive, got {self.band!r}")
        margin = _fraction("margin", self.margin, upper=band, closed=False)
        hysteresis = _fraction("hysteresis", self.hysteresis, upper=band)
        if margin + hysteresis >= band:
            raise InvalidArgument(
                f"margin + hysteresis must be below band, got {self.margin!r} + "
                f"{self.hysteresis!r} >= {self.band!r}"
            )
        budget = _fraction("budget", self.budget, upper=1.0)
        if budget <= 0:
            raise InvalidArgument(f"budget must be positive, got {self.budget!r}")
        if isinstance(self.cooldown, bool) or not isinstance(self.cooldown, int):
            raise InvalidArgument(
                f"cooldown must be a whole number of plans, got {self.cooldown!r}"
            )
        if self.cooldown < 0:
            raise InvalidArgument(f"cooldown must be >= 0, got {self.cooldown!r}")

    @property
    def trigger(self) -> float:
        """A node above this multiple of its fair share starts a shedding."""
        return 1 + self.band - self.margin

    @property
    def ceiling(self) -> float:
        """Shedding nodes go down to, and receivers fill up to, this multiple."""
        return 1 + self.band - self.margin - self.hysteresis

    def moves_allowed(self, total_tokens: int) -> int:
        """The budget in tokens: ``budget * total_tokens``, at least one."""
        return max(1, int(self.budget * total_tokens))


def check_cooling(total: int, cooling: object) -> dict[int, int]:
    """A plan's ``cooling`` (token -> plans left), checked; zeros dropped."""
    if cooling is None:
        return {}
    if not isinstance(cooling, Mapping):
        raise InvalidArgument(f"cooling must be a mapping of token -> plans, got {cooling!r}")
    out: dict[int, int] = {}
    for token, left in cooling.items():
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < total:
            raise InvalidArgument(f"cooling: token {token!r} is not in range 0..{total - 1}")
        if isinstance(left, bool) or not isinstance(left, int) or left < 0:
            raise InvalidArgument(f"cooling of token {token}: need plans >= 0, got {left!r}")
        if left:
            out[token] = left
    return out
