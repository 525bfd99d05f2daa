"""The SIGTERM shutdown policy, pure: its law at and around each deadline."""

from __future__ import annotations

import math

import pytest

from jobsync.runtime.shutdown import ShutdownPolicy, Step

AT, DRAIN, GRACE = 100.0, 10.0, 1.0
POLICY = ShutdownPolicy(signalled_at=AT, drain_timeout=DRAIN, grace=GRACE)
DRAIN_DEADLINE = AT + DRAIN
EXIT_DEADLINE = AT + DRAIN + GRACE


def test_deadlines() -> None:
    assert POLICY.drain_deadline == DRAIN_DEADLINE
    assert POLICY.exit_deadline == EXIT_DEADLINE
    assert ShutdownPolicy(signalled_at=0.0, drain_timeout=2.0).grace == 1.0
    assert ShutdownPolicy(signalled_at=0.0, drain_timeout=2.0).enforce_deadline


def test_open_claims_wait_until_exactly_the_drain_deadline() -> None:
    before = math.nextafter(DRAIN_DEADLINE, -math.inf)
    for now in (AT, AT + 5, before):
        step = POLICY.decide(now, open_claims=3, drain_started=False, node_done=False)
        assert step is Step.WAIT
        assert POLICY.next_check(now, open_claims=3, drain_started=False) == DRAIN_DEADLINE
    # the deadline instant itself belongs to DRAIN
    step = POLICY.decide(DRAIN_DEADLINE, open_claims=3, drain_started=False, node_done=False)
    assert step is Step.DRAIN
    assert POLICY.next_check(DRAIN_DEADLINE, open_claims=3, drain_started=False) == DRAIN_DEADLINE


@pytest.mark.parametrize("node_done", [False, True])
def test_no_open_claims_drain_at_once(node_done: bool) -> None:
    step = POLICY.decide(AT, open_claims=0, drain_started=False, node_done=node_done)
    assert step is Step.DRAIN  # even a finished node first releases what is open
    assert POLICY.next_check(AT, open_claims=0, drain_started=False) == AT


def test_after_drain_exit_when_the_node_is_done() -> None:
    assert POLICY.decide(AT + 1, open_claims=0, drain_started=True, node_done=True) is Step.EXIT
    assert POLICY.decide(AT + 1, open_claims=2, drain_started=True, node_done=True) is Step.EXIT


def test_after_drain_exit_at_exactly_the_exit_deadline_whatever_the_node_does() -> None:
    before = math.nextafter(EXIT_DEADLINE, -math.inf)
    assert POLICY.decide(before, open_claims=1, drain_started=True, node_done=False) is Step.WAIT
    assert POLICY.next_check(before, open_claims=1, drain_started=True) == EXIT_DEADLINE
    step = POLICY.decide(EXIT_DEADLINE, open_claims=1, drain_started=True, node_done=False)
    assert step is Step.EXIT
    late = POLICY.decide(EXIT_DEADLINE + 60, open_claims=0, drain_started=True, node_done=False)
    assert late is Step.EXIT
    assert POLICY.next_check(EXIT_DEADLINE + 60, open_claims=0, drain_started=True) == (
        EXIT_DEADLINE + 60
    )


def test_the_hand_off_gets_at_least_the_grace_after_a_late_drain() -> None:
    # open claims kept the drain until its deadline: the hand-off still gets `grace`
    step = POLICY.decide(DRAIN_DEADLINE, open_claims=0, drain_started=True, node_done=False)
    assert step is Step.WAIT
    assert POLICY.next_check(DRAIN_DEADLINE, open_claims=0, drain_started=True) - (
        DRAIN_DEADLINE
    ) == pytest.approx(GRACE)


def test_without_the_deadline_only_a_finished_node_ends_the_process() -> None:
    old = ShutdownPolicy(signalled_at=AT, drain_timeout=DRAIN, enforce_deadline=False)
    for now in (EXIT_DEADLINE, EXIT_DEADLINE + 3600):
        assert old.decide(now, open_claims=0, drain_started=True, node_done=False) is Step.WAIT
        assert old.next_check(now, open_claims=0, drain_started=True) == math.inf
    assert old.decide(AT + 1e6, open_claims=0, drain_started=True, node_done=True) is Step.EXIT
    # the drain deadline for open claims is the same
    step = old.decide(DRAIN_DEADLINE, open_claims=1, drain_started=False, node_done=False)
    assert step is Step.DRAIN


def test_zero_grace_and_zero_drain_timeout() -> None:
    now = ShutdownPolicy(signalled_at=AT, drain_timeout=0.0, grace=0.0)
    assert now.decide(AT, open_claims=5, drain_started=False, node_done=False) is Step.DRAIN
    assert now.decide(AT, open_claims=5, drain_started=True, node_done=False) is Step.EXIT


@pytest.mark.parametrize(
    "field, value",
    [("drain_timeout", -1.0), ("grace", -0.5), ("signalled_at", math.inf), ("grace", math.nan)],
)
def test_bad_values_are_refused_with_the_value_named(field: str, value: float) -> None:
    values = {"signalled_at": AT, "drain_timeout": DRAIN, "grace": GRACE, field: value}
    with pytest.raises(ValueError, match=field):
        ShutdownPolicy(**values)  # type: ignore[arg-type]
