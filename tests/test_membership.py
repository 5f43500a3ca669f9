"""Who is in the fleet, as one replica sees it from the heartbeat counters (pure: a fake
clock, reads given by hand)."""

from __future__ import annotations

from worker.core.membership import MISSED_BEATS, Membership

HEARTBEAT = 1.0


def _members(clock: list[float]) -> Membership:
    return Membership("me", HEARTBEAT, lambda: clock[0])


def test_a_member_that_beats_stays_live_when_this_replicas_reads_come_late():
    """Seen in the soak: a loaded replica read the table every 3 heartbeats; the others had
    beaten in between, yet were judged from the read before and counted out — and the lone
    replica took the whole budget."""
    clock = [0.0]
    members = _members(clock)
    assert members.observe({"me": 0, "other": 0}) == ["me", "other"]
    for beat in range(1, 6):
        clock[0] += 3 * HEARTBEAT  # late reads; the other beat three times meanwhile
        assert members.observe({"me": beat, "other": 3 * beat}) == ["me", "other"]


def test_a_member_that_stops_beating_is_gone_within_missed_beats():
    clock = [0.0]
    members = _members(clock)
    members.observe({"me": 0, "other": 0})
    clock[0] += HEARTBEAT
    assert members.observe({"me": 1, "other": 1}) == ["me", "other"]  # its last beat
    gone_at = None
    for beat in range(2, 10):
        clock[0] += HEARTBEAT
        if members.observe({"me": beat, "other": 1}) == ["me"]:
            gone_at = clock[0]
            break
    assert gone_at is not None
    assert gone_at - HEARTBEAT <= MISSED_BEATS * HEARTBEAT  # from its last beat


def test_a_live_member_missing_one_beat_is_still_counted():
    clock = [0.0]
    members = _members(clock)
    members.observe({"me": 0, "other": 0})
    clock[0] += HEARTBEAT
    members.observe({"me": 1, "other": 1})
    clock[0] += HEARTBEAT
    assert members.observe({"me": 2, "other": 1}) == ["me", "other"]  # one beat late
    clock[0] += HEARTBEAT
    assert members.observe({"me": 3, "other": 2}) == ["me", "other"]


def test_a_slow_table_gives_members_time_in_proportion():
    """Each of its beats took the table 1.5 s to answer (as ours did): a member beating every
    2.5 s is live; one that stopped is still counted out, later."""
    clock = [0.0]
    members = _members(clock)
    members.observe({"me": 0, "other": 0}, took=1.5)
    clock[0] += 2.5
    assert members.observe({"me": 1, "other": 1}, took=1.5) == ["me", "other"]
    clock[0] += 2.5
    assert members.observe({"me": 2, "other": 1}, took=1.5) == ["me", "other"]  # late, not gone
    gone = None
    for beat in range(3, 12):
        clock[0] += 2.5
        if members.observe({"me": beat, "other": 1}, took=1.5) == ["me"]:
            gone = clock[0]
            break
    assert gone is not None
    assert gone - 2.5 <= MISSED_BEATS * (HEARTBEAT + 1.5) + 2.5  # within its missed beats
