"""Completions and releases in the user's own transaction (memory store transactions):
``release(task, connection=)``, a bounded wait without it, and the Job forgetting
transactional completions once they committed."""

from __future__ import annotations

import pytest

from jobsync import Job, Task
from jobsync.backends.memory import MemoryStore
from jobsync.errors import InvalidArgument, LockTimeout
from jobsync.runtime import ledger as ledger_module

from .conftest import FAST, eventually


def _job(store: MemoryStore, name: str) -> Job:
    return Job(name, "site", store.connect(name), coordination_config=FAST, handle_sigterm=False)


def _mine(job: Job, n: int) -> list[Task]:
    tasks = [t for t in map(Task, range(10_000)) if job.can_claim_task(t)][:n]
    assert len(tasks) == n
    return tasks


def test_release_inside_the_transaction_that_completed_the_task() -> None:
    store = MemoryStore()
    with _job(store, "a") as a:
        task, other = _mine(a, 2)
        assert a.add_task(task) and a.add_task(other)
        tx = store.transaction("app")
        assert a.complete(task, connection=tx)
        # Without connection= the release meets the row our own transaction holds:
        # a bounded wait, then LockTimeout naming the task and the remedy.
        with pytest.raises(LockTimeout, match=rf"{task.key!r}.*roll that transaction back"):
            a.release(task)
        # Inside it, no wait; but the task is done in this transaction, as on
        # PostgreSQL and SQLite: nothing open to release.  Rolling back gives it back.
        assert not a.release(task, connection=tx)
        tx.rollback()  # the side effect failed: the claim is ours again, open
        released = store.transaction("app2")
        assert a.release(other, connection=released)
        released.commit()
        assert _claims(a) == {task.key: "claimed"}  # other's release committed
    assert _claims(a) == {}  # and a released task at exit: the next owner redoes it


def _claims(job: Job) -> dict[object, object]:
    return {row["task_id"]: row["status"] for row in job.get_audit()}


def test_a_committed_transactional_release_lets_this_job_claim_again() -> None:
    store = MemoryStore()
    with _job(store, "a") as a:
        (task,) = _mine(a, 1)
        assert a.add_task(task)
        with store.transaction("app") as tx:
            assert a.release(task, connection=tx)
            assert not a.add_task(task)  # not committed yet: still ours, not twice
        assert a.add_task(task)  # committed: released, so claimable again


def test_transactional_completions_that_committed_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ledger_module, "UNCERTAIN_LIMIT", 9)
    store = MemoryStore()
    with _job(store, "a") as a:
        tasks = _mine(a, 10)
        for task in tasks[:9]:
            assert a.add_task(task)
            with store.transaction("app") as tx:
                assert a.complete(task, connection=tx)
        assert len(a._ledger.uncertain) == 9  # at the limit: nothing asked yet
        last = tasks[9]
        assert a.add_task(last)
        pending = store.transaction("app")
        assert a.complete(last, connection=pending)  # the tenth, not committed yet
        # past the limit, the coordination thread asks once which are still open
        assert eventually(lambda: len(a._ledger.uncertain) == 1, 10)
        assert set(a._ledger.uncertain) == {last.key}  # its transaction is still open
        assert a.statistics()["backend_open_claims"] == 1
        pending.commit()
    assert set(_claims(a).values()) == {"done"} and len(_claims(a)) == 10


class _PlainBackend:
    """A backend with the plain verbs only: no ``complete_in``/``release_in``."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def complete(self, *args: object) -> frozenset[str]:
        raise AssertionError("a transactional completion must not fall back to complete")

    def release(self, *args: object) -> frozenset[str]:
        raise AssertionError("a transactional release must not fall back to release")


def test_connection_is_refused_by_a_backend_without_transactional_completion() -> None:
    store = MemoryStore()
    with _job(store, "a") as a:
        (task,) = _mine(a, 1)
        assert a.add_task(task)
        ledger = a._ledger
        real = ledger.backend
        ledger.backend = _PlainBackend(real)  # type: ignore[assignment]
        with store.transaction("app") as tx:
            refusal = r"_PlainBackend.*TransactionalCompletion"
            for verb in (a.complete, a.release):
                with pytest.raises(InvalidArgument, match=refusal):
                    verb(task, connection=tx)
        ledger.backend = real
        assert a.complete(task)  # the claim was left open by the refusals
