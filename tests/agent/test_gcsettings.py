"""agent.wire.gcsettings.settle: what it changes in the collector (restored afterwards)."""

from __future__ import annotations

import gc

from agent.wire import gcsettings


def test_settle_freezes_start_up_objects_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        start_up = [{"made": "at start"}]  # a container that exists before settle()
        gc.unfreeze()
        settle_count = len(gc.get_objects())
        gcsettings.settle()
        assert gc.get_threshold() == (100_000, 50, 50)
        # everything alive at settle() moved to the permanent generation
        assert gc.get_freeze_count() >= settle_count // 2
        assert not any(obj is start_up for obj in gc.get_objects())
        # cycles made later are still found by a collection
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
