"""A claim that committed but whose reply was lost is given back, not stranded.

``add_task`` answers False when the claim's reply is lost, though the claim
may have committed: the claim row then names a live incarnation that will
never complete it, and nobody else may take the task.  The ledger keeps such
claims as doubtful and gives them back between ticks unless a retry took them.
"""

from __future__ import annotations

import datetime

from jobsync import Job, Task
from jobsync.backends.memory import MemoryStore
from jobsync.core.errors import BackendUnavailable

from .conftest import FAST, eventually


class LosesOneClaimReply(MemoryStore):
    """A store whose next ``claim`` commits and then loses its answer."""

    armed = False

    def _committed(self, client: str, verb: str) -> None:
        if verb == "claim" and self.armed:
            self.armed = False
            raise BackendUnavailable("the claim's reply was lost")


def _open_claims(store: MemoryStore, date: datetime.date, key: str) -> list[object]:
    audit = store.connect("reader").read_audit("site", date)
    return [r for r in audit if r.task_key == key and r.status == "claimed"]


def test_a_claim_whose_reply_was_lost_is_given_back() -> None:
    store = LosesOneClaimReply()
    with Job("a", "site", store.connect("a"), coordination_config=FAST) as job:
        assert eventually(lambda: job.can_claim_task(Task("t1")))
        store.armed = True
        assert job.add_task(Task("t1")) is False  # the reply was lost; it committed
        assert not store.armed
        date = job.date
        assert eventually(lambda: not _open_claims(store, date, "t1")), "stranded"
        assert job.add_task(Task("t1")) is True  # claimable again, once
        assert job.add_task(Task("t1")) is False


def test_a_retry_takes_the_doubtful_claim_over_instead() -> None:
    store = LosesOneClaimReply()
    with Job("a", "site", store.connect("a"), coordination_config=FAST) as job:
        assert eventually(lambda: job.can_claim_task(Task("t2")))
        store.armed = True
        assert job.add_task(Task("t2")) is False
        assert job.add_task(Task("t2")) is True  # its own open claim, found again
        assert _open_claims(store, job.date, "t2")  # still open: it is being worked on
        assert job.statistics()["releases"] == 0
        assert job.complete(Task("t2")) is True
