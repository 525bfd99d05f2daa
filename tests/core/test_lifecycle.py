"""The node lifecycle table: legal edges move, illegal ones name state and event."""

from __future__ import annotations

import itertools

import pytest

from jobsync.core import NodeEvent, NodeState, transition
from jobsync.core.lifecycle import TERMINAL, TRANSITIONS
from jobsync.errors import IllegalTransition


def test_happy_path() -> None:
    state = NodeState.STARTING
    for event in (NodeEvent.REGISTERED, NodeEvent.READY, NodeEvent.DRAIN, NodeEvent.DRAINED):
        state = transition(state, event)
    assert state is NodeState.STOPPED


def test_fencing_and_return() -> None:
    state = transition(NodeState.ACTIVE, NodeEvent.LEASE_LOST)
    assert state is NodeState.FENCED
    assert transition(state, NodeEvent.REREGISTERED) is NodeState.JOINING


@pytest.mark.parametrize(("state", "event"), list(itertools.product(NodeState, NodeEvent)))
def test_every_pair_is_in_the_table_or_refused(state: NodeState, event: NodeEvent) -> None:
    if (state, event) in TRANSITIONS:
        assert transition(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition, match=f"{event.value!r}.*{state.value!r}"):
            transition(state, event)


def test_terminal_states_have_no_way_out() -> None:
    for (state, _event), _target in TRANSITIONS.items():
        assert state not in TERMINAL


def test_superseded_is_reachable_from_every_live_state() -> None:
    for state in NodeState:
        if state not in TERMINAL:
            assert transition(state, NodeEvent.SUPERSEDED) is NodeState.SUPERSEDED
