"""server/limits.py: per-address connections, messages and anonymous votes, with a fake clock."""

from __future__ import annotations

import pytest

from fablecast.server.limits import AddressLimits, AnonymousVoteQuota, TokenBucket, address_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unix-socket", "unix-socket"),
    ],
)
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    b = TokenBucket.full(rate=2.0, burst=3.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5) and not b.take(0.5)  # 0.5 s at 2/s: one token
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst
    assert not b.take(50.0)  # a clock going back refills nothing


def test_connections_per_address_are_capped_and_released() -> None:
    limits = AddressLimits(max_connections=3, messages_per_s=10, burst=10)
    assert [limits.connect("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limits.connections("a") == 3
    assert limits.connect("b", 0.0)  # other addresses are not affected
    limits.disconnect("a")
    assert limits.connect("a", 0.0) and not limits.connect("a", 0.0)
    for _ in range(3):
        limits.disconnect("a")
    limits.disconnect("b")
    assert len(limits) == 0  # bounded: entries go with their last connection
    limits.disconnect("never")  # harmless


def test_messages_per_address_are_shared_by_its_connections() -> None:
    limits = AddressLimits(max_connections=10, messages_per_s=4, burst=5)
    for _ in range(3):
        limits.connect("a", 0.0)
    limits.connect("b", 0.0)
    assert sum(limits.message("a", 0.0) for _ in range(20)) == 5
    assert limits.message("b", 0.0)
    assert sum(limits.message("a", 1.0) for _ in range(20)) == 4
    assert limits.message("unknown", 0.0)  # no entry (not counted): not limited here


def test_anonymous_vote_quota_per_address_per_window() -> None:
    quota = AnonymousVoteQuota(per_address=2)
    assert quota.admit("demo", 1, "a", "anon-1")
    assert quota.admit("demo", 1, "a", "anon-2")
    assert not quota.admit("demo", 1, "a", "anon-3")
    assert quota.admit("demo", 1, "a", "anon-1")  # changing a vote is free
    assert quota.admit("demo", 1, "b", "anon-3")  # another address
    assert quota.admit("other", 1, "a", "anon-3")  # another room
    assert quota.voters("demo", "a") == 2
    assert not quota.admit("demo", 0, "a", "anon-9")  # an older window is closed
    assert quota.admit("demo", 2, "a", "anon-3")  # a new window, a new quota
    assert quota.voters("demo", "a") == 1 and quota.voters("demo", "b") == 0
    quota.close_room("demo")
    assert quota.voters("demo", "a") == 0


def test_fresh_identity_loop_counts_at_most_the_quota() -> None:
    """The connect-vote-disconnect loop under fresh identities, as a policy."""
    quota = AnonymousVoteQuota(per_address=16)
    counted = sum(quota.admit("demo", 7, "203.0.113.7", f"anon-{i}") for i in range(5000))
    assert counted == 16


def test_anonymous_reactions_share_one_bucket_per_address() -> None:
    limits = AddressLimits(
        max_connections=50, messages_per_s=1000, burst=1000, reactions_per_s=8, reaction_burst=16
    )
    for _ in range(50):  # fifty fresh identities on fifty connections of one address
        limits.connect("a", 0.0)
    limits.connect("b", 0.0)
    assert sum(limits.reaction("a", 0.0) for _ in range(50 * 4)) == 16
    assert sum(limits.reaction("a", 1.0) for _ in range(50 * 4)) == 8
    assert limits.reaction("b", 1.0)
