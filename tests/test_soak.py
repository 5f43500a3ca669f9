"""The soak (`make soak`, `bench/soak.py`) sized for CI: a few hundred messages, one of each
fault on a short timeline — a rolling restart, two SIGKILLs, the table down, a target
throttling, a replica joining and one leaving. Every promise of the report must hold."""

from __future__ import annotations

import pytest

from bench.soak import CI, soak

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(400)]


async def test_a_fleet_keeps_every_promise_through_a_rolling_deploy_and_its_faults(
    aws, proxy, tmp_path
):
    report = await soak(aws, await aws.client("dynamodb"), proxy, tmp_path, CI, say=print)
    print(report.text())
    assert report.broken() == []
    assert report.drained > 0
    assert report.lost == 0
    assert report.parked == 0
    assert report.twice["fifo"] == 0
    assert len(report.in_flight_at_kills) == 2  # both kills happened during the drain
    assert min(report.in_flight_at_kills) > 0, "a kill that found nothing in flight tests nothing"
    assert set(report.rss) == {"r0", "r1", "r2", "r3"}  # the joiner served too
