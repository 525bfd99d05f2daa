"""Contract: lock registration, replacement, ownership, expiry and clearing."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest

from jobsync.backends.base import LockSpec
from jobsync.core.errors import InvalidArgument, InvalidLock, InvalidPattern
from jobsync.testing.scene import SHORT_LEASE, TOTAL_TOKENS, Scene, just_before, needs_clock


def lock(
    scene: Scene,
    key: str,
    patterns: tuple[str, ...] = ("a%",),
    reason: str | None = None,
    expires_in: float | None = None,
) -> LockSpec:
    """A lock on ``key``'s own token."""
    return LockSpec(
        task_key=key,
        token=scene.token_of(key),
        patterns=patterns,
        reason=reason,
        expires_in=expires_in,
    )


def _keys(scene: Scene) -> list[str]:
    return [record.task_key for record in scene.db.list_locks(scene.site)]


class LockContract:
    def test_replace_locks_registers_locks_listed_by_creation_then_key(self, scene: Scene) -> None:
        counter = scene.counter()
        specs = [lock(scene, "k2", ("gpu-%", "%"), "why"), lock(scene, "k1", ("b_",))]
        assert scene.db.replace_locks(scene.site, "admin", specs, False) == 2
        assert scene.counter() > counter
        records = scene.db.list_locks(scene.site)
        assert {r.task_key for r in records} == {"k1", "k2"}
        assert list(records) == sorted(records, key=lambda r: (r.created_at, r.task_key))
        k2 = next(r for r in records if r.task_key == "k2")
        assert (k2.token, k2.patterns, k2.reason) == (scene.token_of("k2"), ("gpu-%", "%"), "why")
        assert (k2.created_by, k2.expires_at) == ("admin", None)
        scene.wait_until(scene.now() + 0.01)
        scene.db.replace_locks(scene.site, "admin", [lock(scene, "k0")], False)
        assert _keys(scene)[-1] == "k0"  # created last, listed last despite its key

    def test_clear_existing_replaces_the_creators_locks_in_one_call(self, scene: Scene) -> None:
        db, site = scene.db, scene.site
        db.replace_locks(site, "admin", [lock(scene, "k1"), lock(scene, "k2")], False)
        db.replace_locks(site, "ops", [lock(scene, "k3")], False)
        assert db.replace_locks(site, "admin", [lock(scene, "k4")], True) == 1
        assert sorted(_keys(scene)) == ["k3", "k4"]

    def test_the_last_registrant_owns_a_lock_which_keeps_its_created_at(self, scene: Scene) -> None:
        db, site = scene.db, scene.site
        db.replace_locks(site, "admin", [lock(scene, "k1", ("a%",))], False)
        (first,) = db.list_locks(site)
        scene.wait_until(scene.now() + 0.05)
        db.replace_locks(site, "ops", [lock(scene, "k1", ("b%",))], False)
        (second,) = db.list_locks(site)
        assert (second.created_by, second.patterns, second.created_at) == (
            "ops",
            ("b%",),
            first.created_at,
        )
        db.replace_locks(site, "ops", [lock(scene, "k1", ("c%",))], True)
        (third,) = db.list_locks(site)
        assert (third.patterns, third.created_at) == (("c%",), first.created_at)
        assert db.clear_locks(site, "admin") == 0

    def test_locks_expire(self, scene: Scene) -> None:
        specs = [lock(scene, "k1", expires_in=SHORT_LEASE), lock(scene, "k2")]
        scene.db.replace_locks(scene.site, "admin", specs, False)
        k1 = next(r for r in scene.db.list_locks(scene.site) if r.task_key == "k1")
        assert k1.expires_at is not None
        assert k1.expires_at == pytest.approx(k1.created_at + SHORT_LEASE, abs=1e-3)
        scene.wait_until(k1.expires_at)
        assert _keys(scene) == ["k2"]
        assert [r.task_key for r in scene.view().locks] == ["k2"]

    def test_a_lock_is_gone_exactly_at_its_expiry(self, scene: Scene) -> None:
        needs_clock(scene.harness)
        scene.db.replace_locks(scene.site, "admin", [lock(scene, "k1", expires_in=10.0)], False)
        (record,) = scene.db.list_locks(scene.site)
        assert record.expires_at is not None
        scene.set_time(just_before(record.expires_at))
        assert _keys(scene) == ["k1"]
        scene.set_time(record.expires_at)
        assert _keys(scene) == []

    def test_clear_locks_by_creator_and_all(self, scene: Scene) -> None:
        db, site = scene.db, scene.site
        db.replace_locks(site, "admin", [lock(scene, "k1"), lock(scene, "k2")], False)
        db.replace_locks(site, "ops", [lock(scene, "k3")], False)
        counter = scene.counter()
        assert db.clear_locks(site, "admin") == 2
        assert _keys(scene) == ["k3"] and scene.counter() > counter
        counter = scene.counter()
        assert db.clear_locks(site, "admin") == 0
        assert scene.counter() == counter
        assert db.clear_locks(site, None) == 1
        assert _keys(scene) == []

    def test_a_reader_never_sees_a_creators_locks_missing(self, scene: Scene) -> None:
        reader, writer = scene.connect("reader"), scene.connect("writer")

        def round_of(i: int) -> list[LockSpec]:
            return [lock(scene, f"r{i}-{j}", reason=f"round {i}") for j in range(5)]

        writer.replace_locks(scene.site, "admin", round_of(0), True)
        stop, seen = threading.Event(), []

        def read() -> None:
            while not stop.is_set():
                records = reader.list_locks(scene.site)
                seen.append(tuple(r.reason for r in records if r.created_by == "admin"))

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for i in range(1, 40):
                writer.replace_locks(scene.site, "admin", round_of(i), True)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert seen and all(len(reasons) == 5 and len(set(reasons)) == 1 for reasons in seen)
        assert {r.reason for r in scene.db.list_locks(scene.site)} == {"round 39"}

    @pytest.mark.parametrize(
        ("field", "value", "error", "named"),
        [
            ("token", TOTAL_TOKENS, InvalidLock, repr(TOTAL_TOKENS)),
            ("token", -1, InvalidLock, "-1"),
            ("patterns", ("ok%", "bad\\"), InvalidPattern, repr("bad\\")),
            ("patterns", (), InvalidLock, repr("k6")),
            ("expires_in", -1.0, InvalidLock, "-1.0"),
        ],
    )
    def test_a_bad_lock_is_refused_naming_it_and_nothing_is_written(
        self, scene: Scene, field: str, value: Any, error: type[InvalidArgument], named: str
    ) -> None:
        db, site = scene.db, scene.site
        db.replace_locks(site, "admin", [lock(scene, "k1")], False)
        before, counter = db.list_locks(site), scene.counter()
        bad = attrs.evolve(lock(scene, "k6"), **{field: value})
        with pytest.raises(error) as caught:
            db.replace_locks(site, "admin", [lock(scene, "k5"), bad], True)
        assert named in str(caught.value)
        assert db.list_locks(site) == before and scene.counter() == counter
