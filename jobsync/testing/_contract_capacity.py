"""Contract: the planner's inputs a node row carries, capacity and an operator's drain."""

from __future__ import annotations

import math

import pytest

from jobsync.core.errors import InvalidArgument
from jobsync.testing.scene import Scene


class CapacityContract:
    def test_a_registration_stores_its_capacity_default_one(self, scene: Scene) -> None:
        scene.join("plain")
        reg = scene.db.register(scene.site, "big", 60.0, capacity=2.5)
        assert reg.incarnation > 0
        rows = {row.name: row for row in scene.db.read_nodes(scene.site)[1]}
        assert (rows["plain"].capacity, rows["big"].capacity) == (1.0, 2.5)
        assert {n.name: n.capacity for n in scene.view().nodes} == {"plain": 1.0, "big": 2.5}

    def test_set_capacity_updates_the_own_row_and_bumps_once(self, scene: Scene) -> None:
        a = scene.join("a")
        before = scene.counter()
        assert scene.db.set_capacity(scene.site, "a", a.incarnation, 4.0) is True
        row = scene.row("a")
        assert row is not None and row.capacity == 4.0
        assert scene.counter() == before + 1
        # the same capacity again: held, nothing written
        assert scene.db.set_capacity(scene.site, "a", a.incarnation, 4.0) is True
        assert scene.counter() == before + 1

    def test_set_capacity_of_another_incarnation_writes_nothing(self, scene: Scene) -> None:
        a = scene.join("a")
        scene.join("a")  # a newer incarnation took the name
        before = scene.everything()
        assert scene.db.set_capacity(scene.site, "a", a.incarnation, 3.0) is False
        assert scene.db.set_capacity(scene.site, "nobody", 1, 3.0) is False
        assert scene.everything() == before

    @pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "2", True, 1e9])
    def test_a_bad_capacity_is_refused_naming_it(self, scene: Scene, bad: object) -> None:
        a = scene.join("a")
        before = scene.everything()
        with pytest.raises(InvalidArgument, match="capacity"):
            scene.db.set_capacity(scene.site, "a", a.incarnation, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="capacity"):
            scene.db.register(scene.site, "b", 60.0, capacity=bad)  # type: ignore[arg-type]
        assert scene.everything() == before


class DrainContract:
    def test_drain_for_a_duration_records_when_until_and_who(self, scene: Scene) -> None:
        scene.join("a")
        before = scene.counter()
        row = scene.db.set_drain(scene.site, "a", True, duration=30.0, note="ops: kernel")
        assert row is not None and row.drained_at is not None and row.drain_until is not None
        assert row.drain_until == pytest.approx(row.drained_at + 30.0)
        assert row.drain_note == "ops: kernel"
        assert row.is_drained(row.drained_at) and not row.is_drained(row.drain_until)
        assert scene.row("a") == row
        assert scene.counter() == before + 1

    def test_drain_without_duration_lasts_until_undrained(self, scene: Scene) -> None:
        scene.join("a")
        row = scene.db.set_drain(scene.site, "a", True)
        assert row is not None and row.drain_until is None and row.is_drained(math.inf)
        before = scene.counter()
        cleared = scene.db.set_drain(scene.site, "a", False)
        assert cleared is not None
        assert (cleared.drained_at, cleared.drain_until, cleared.drain_note) == (None, None, "")
        assert scene.row("a") == cleared and scene.counter() == before + 1

    def test_a_drain_outlasts_a_new_incarnation_of_the_name(self, scene: Scene) -> None:
        scene.join("a")
        drained = scene.db.set_drain(scene.site, "a", True, note="maintenance")
        scene.db.register(scene.site, "a", 60.0, capacity=2.0)
        row = scene.row("a")
        assert row is not None and drained is not None
        assert (row.drained_at, row.drain_note, row.capacity) == (
            drained.drained_at,
            "maintenance",
            2.0,
        )

    def test_drain_of_an_unknown_name_writes_nothing(self, scene: Scene) -> None:
        before = scene.everything()
        assert scene.db.set_drain(scene.site, "nobody", True) is None
        assert scene.everything() == before

    @pytest.mark.parametrize(
        ("duration", "note"), [(0.0, ""), (-5.0, ""), (math.inf, ""), (None, "x\x00"), (None, 7)]
    )
    def test_bad_drain_arguments_are_refused(
        self, scene: Scene, duration: object, note: object
    ) -> None:
        scene.join("a")
        before = scene.everything()
        with pytest.raises(InvalidArgument, match="drain"):
            scene.db.set_drain(scene.site, "a", True, duration=duration, note=note)  # type: ignore[arg-type]
        assert scene.everything() == before
