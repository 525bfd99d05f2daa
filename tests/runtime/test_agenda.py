"""The node's agenda alone: wants, timers, gates, backoff, and the record of a wake."""

from __future__ import annotations

import math

from jobsync.runtime.agenda import ALWAYS, NEVER, Agenda, Wake


def test_an_empty_agenda_never_wakes() -> None:
    agenda = Agenda()
    assert agenda.next_wakeup(10.0) == NEVER
    assert agenda.due(10.0) == ()
    assert agenda.when("heartbeat") == NEVER
    assert agenda.gate("lead") == ALWAYS


def test_a_want_is_due_at_once_until_met() -> None:
    agenda = Agenda()
    agenda.want("refresh", reason="notified")
    assert agenda.wanted("refresh")
    assert agenda.is_due("refresh", 5.0)
    assert agenda.next_wakeup(5.0) == 5.0
    agenda.met("refresh")
    assert not agenda.wanted("refresh")
    assert agenda.next_wakeup(5.0) == NEVER


def test_the_first_reason_of_a_want_is_kept() -> None:
    agenda = Agenda()
    agenda.want("refresh", reason="notified")
    agenda.want("refresh", reason="a peer died")
    assert agenda.reason("refresh", 0.0) == "notified"


def test_timers_are_due_at_their_instant_and_the_earliest_wakes() -> None:
    agenda = Agenda()
    agenda.at("heartbeat", 12.0, reason="interval")
    agenda.at("refresh", 30.0, reason="reconciliation")
    assert agenda.next_wakeup(10.0) == 12.0
    assert not agenda.is_due("heartbeat", 11.999)
    assert agenda.is_due("heartbeat", 12.0)  # the boundary instant counts
    assert agenda.due(20.0) == ("heartbeat",)
    agenda.at("heartbeat", 40.0, reason="interval")
    assert agenda.next_wakeup(20.0) == 30.0
    agenda.at("refresh", NEVER, reason="cancelled")
    assert agenda.when("refresh") == NEVER
    agenda.cancel("heartbeat")
    assert agenda.next_wakeup(20.0) == NEVER


def test_a_timer_in_the_past_is_returned_as_it_is() -> None:
    agenda = Agenda()
    agenda.at("lead", 3.0, reason="an overdue release")
    assert agenda.next_wakeup(10.0) == 3.0
    agenda.at("heartbeat", ALWAYS, reason="start")
    assert agenda.is_due("heartbeat", -1e9)


def test_a_want_masks_its_own_timer() -> None:
    agenda = Agenda()
    agenda.at("lead", 3.0, reason="a deadline")
    agenda.want("lead", reason="a plan to commit")
    assert agenda.next_wakeup(10.0) == 10.0  # not the timer in the past
    assert agenda.reason("lead", 10.0) == "a plan to commit"
    agenda.met("lead")
    assert agenda.next_wakeup(10.0) == 3.0  # the timer stays


def test_a_quiet_timer_is_due_but_never_wakes() -> None:
    agenda = Agenda()
    agenda.at("reap", 5.0, reason="an incarnation ended", wakes=False)
    assert agenda.next_wakeup(0.0) == NEVER
    assert agenda.is_due("reap", 5.0)
    agenda.at("reap", 6.0, reason="again")  # set loud again
    assert agenda.next_wakeup(0.0) == 6.0


def test_a_gate_holds_its_slot_back() -> None:
    agenda = Agenda()
    agenda.want("lead", reason="registered")
    agenda.not_before("lead", 8.0, reason="settle window")
    assert not agenda.is_due("lead", 7.0)
    assert agenda.next_wakeup(7.0) == 8.0
    assert agenda.is_due("lead", 8.0)
    agenda.met("lead")
    agenda.at("lead", 4.0, reason="a fence ends")
    assert agenda.next_wakeup(2.0) == 8.0  # max(timer, gate)
    agenda.at("lead", 9.0, reason="a fence ends")
    assert agenda.next_wakeup(2.0) == 9.0
    agenda.not_before("lead", ALWAYS, reason="lifted")
    assert agenda.gate("lead") == ALWAYS


def test_an_ungated_want_wakes_now_before_any_other_timer() -> None:
    agenda = Agenda()
    agenda.at("heartbeat", 1.0, reason="interval")
    agenda.want("refresh", reason="notified")
    assert agenda.next_wakeup(5.0) == 5.0


def test_asleep_slots_are_ignored() -> None:
    agenda = Agenda()
    agenda.want("lead", reason="a peer died")
    agenda.at("heartbeat", 12.0, reason="interval")
    assert agenda.next_wakeup(10.0) == 10.0
    assert agenda.next_wakeup(10.0, asleep=("lead",)) == 12.0


def test_a_backoff_holds_everything_until_it_ends() -> None:
    agenda = Agenda()
    agenda.want("refresh", reason="retry")
    agenda.defer(10.5, reason="backoff after BackendUnavailable")
    assert agenda.deferred(10.0)
    assert agenda.next_wakeup(10.0) == 10.5
    assert not agenda.deferred(10.5)
    agenda.resume()
    assert agenda.next_wakeup(11.0) == 11.0


def test_the_record_of_a_wake_names_what_was_due_and_why() -> None:
    agenda = Agenda()
    agenda.at("heartbeat", 5.0, reason="interval")
    agenda.want("refresh", reason="notified")
    agenda.at("peer-check", 50.0, reason="a peer's lease end")
    assert agenda.last_wake is None
    agenda.note(6.0)
    agenda.met("refresh")  # the tick goes on: the note keeps the agenda as it stood
    wake = agenda.last_wake
    assert wake == Wake(6.0, (("heartbeat", "interval"), ("refresh", "notified")))
    assert str(wake) == "woke at 6.000 for heartbeat (interval), refresh (notified)"
    agenda.defer(9.0, reason="backoff")
    assert agenda.record(7.0).backoff
    assert str(Wake(1.0, ())) == "woke at 1.000 with nothing due"


def test_describe_lists_every_entry() -> None:
    agenda = Agenda()
    agenda.want("lead", reason="registered")
    agenda.not_before("lead", 3.0, reason="settle window")
    agenda.at("reap", 7.0, reason="an incarnation ended", wakes=False)
    agenda.defer(2.0, reason="backoff")
    described = agenda.describe()
    assert described["lead"] == "wanted: registered; not before 3.000: settle window"
    assert described["reap"] == "at 7.000: an incarnation ended (quiet)"
    assert described["backoff"] == "until 2.000: backoff"
    assert math.isinf(agenda.next_wakeup(0.0)) is False
