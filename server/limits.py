"""Limits one client cannot get around by opening more connections or identities.

Pure policy: plain method calls, time passed in as ``now`` (seconds, any
monotonic clock), no sockets. The node calls them at the handshake, on every
message and on every vote; docs/security.md lists each limit with its default.

Rules:
1. **Addresses.** Limits count per address: an IPv4 address, or the /64 of an
   IPv6 address (one host usually holds a whole /64). IPv4-mapped IPv6
   addresses count as their IPv4 address. ``address_key`` makes the key.
2. **Connections per address** (``AddressLimits.connect``): at most
   ``max_connections`` open at once; one more is refused at the handshake.
3. **Messages per address** (``AddressLimits.message``): a token bucket of
   ``messages_per_s`` with ``burst`` shared by every connection of the
   address, on top of each connection's own bucket.
4. **Anonymous reactions per address** (``AddressLimits.reaction``): the
   reactions of all anonymous identities of one address share one bucket
   (``reactions_per_s``, ``reaction_burst``), so fresh identities cannot
   multiply one host's weight in the room's mood.
5. **Anonymous votes per address** (``AnonymousVoteQuota.admit``): in one vote
   window of one room, at most ``per_address`` anonymous identities from one
   address hold a counted vote. An identity already admitted in the window is
   admitted again (changing a vote is free). The quota outlives connections:
   closing every connection and coming back under fresh identities does not
   reset it.
6. **Memory.** Every table here is bounded by what is open now: an address
   entry goes with its last connection, a room's quota entries go when its
   next window opens.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def address_key(host: str) -> str:
    """The key limits count under (rule 1); a non-IP ``host`` (e.g. a unix socket) is itself."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float
    t: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket holding ``burst`` tokens at ``now``."""
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Take one token if there is one (refilled up to ``now``)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.t) * self.rate)
        self.t = max(self.t, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class _Address:
    connections: int
    bucket: TokenBucket
    reactions: TokenBucket


class AddressLimits:
    """Connections and messages per address (rules 2, 3 and 5)."""

    def __init__(
        self,
        max_connections: int,
        messages_per_s: float,
        burst: int,
        reactions_per_s: float = 8.0,
        reaction_burst: int = 16,
    ) -> None:
        self.max_connections = max_connections
        self.messages_per_s = messages_per_s
        self.burst = burst
        self.reactions_per_s = reactions_per_s
        self.reaction_burst = reaction_burst
        self._addresses: dict[str, _Address] = {}

    def connections(self, address: str) -> int:
        """Connections ``address`` holds now."""
        entry = self._addresses.get(address)
        return 0 if entry is None else entry.connections

    def __len__(self) -> int:
        return len(self._addresses)

    def connect(self, address: str, now: float) -> bool:
        """Count one more connection of ``address``; False (nothing counted) when at the cap."""
        entry = self._addresses.get(address)
        if entry is None:
            bucket = TokenBucket.full(self.messages_per_s, float(self.burst), now)
            reactions = TokenBucket.full(self.reactions_per_s, float(self.reaction_burst), now)
            self._addresses[address] = _Address(1, bucket, reactions)
            return True
        if entry.connections >= self.max_connections:
            return False
        entry.connections += 1
        return True

    def disconnect(self, address: str) -> None:
        """One connection of ``address`` closed (one that ``connect`` counted)."""
        entry = self._addresses.get(address)
        if entry is None:
            return
        entry.connections -= 1
        if entry.connections <= 0:
            del self._addresses[address]

    def message(self, address: str, now: float) -> bool:
        """Whether one more message of ``address`` is within its rate (rule 3)."""
        entry = self._addresses.get(address)
        return True if entry is None else entry.bucket.take(now)

    def reaction(self, address: str, now: float) -> bool:
        """Whether one more reaction of an anonymous identity of ``address`` fits (rule 4)."""
        entry = self._addresses.get(address)
        return True if entry is None else entry.reactions.take(now)


@dataclass(slots=True)
class _WindowVoters:
    window: int
    by_address: dict[str, set[str]] = field(default_factory=dict)


class AnonymousVoteQuota:
    """Anonymous identities with a counted vote, per address, per window of a room (rule 4)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._rooms: dict[str, _WindowVoters] = {}

    def admit(self, room: str, window: int, address: str, subject: str) -> bool:
        """Whether ``subject`` (anonymous, from ``address``) may hold a vote in ``window``.

        Call it only for a vote the room would apply (the open window, an option on
        the ballot), so refused and malformed votes spend nothing. A window older
        than the one tracked is refused: it is closed.
        """
        voters = self._rooms.get(room)
        if voters is None or window > voters.window:
            voters = self._rooms[room] = _WindowVoters(window)  # the old window's entries go
        elif window < voters.window:
            return False
        subjects = voters.by_address.setdefault(address, set())
        if subject in subjects:
            return True
        if len(subjects) >= self.per_address:
            return False
        subjects.add(subject)
        return True

    def voters(self, room: str, address: str) -> int:
        """Anonymous identities of ``address`` admitted in ``room``'s current window."""
        voters = self._rooms.get(room)
        return 0 if voters is None else len(voters.by_address.get(address, ()))

    def close_room(self, room: str) -> None:
        """Forget a room that closed."""
        self._rooms.pop(room, None)
