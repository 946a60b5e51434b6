"""Prometheus metrics of one node (its own registry, so several nodes can share a process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# ``*_created`` series only add noise to a scrape of this node.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Every metric the node exports on ``GET /metrics``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("fablecast_connections", "Open WebSocket connections", registry=r)
        self.rooms = Gauge("fablecast_rooms", "Open rooms", registry=r)
        self.frames_sent = Counter(
            "fablecast_frames_sent",
            "Frames written to clients (one per frame per client)",
            registry=r,
        )
        self.room_frames = Counter(
            "fablecast_room_frames",
            "Room frames stamped (one per frame, before fan-out)",
            registry=r,
        )
        self.slow_clients_dropped = Counter(
            "fablecast_slow_clients_dropped",
            "Clients closed with 4008 because their outbox exceeded its bound",
            registry=r,
        )
        self.messages_received = Counter(
            "fablecast_messages_received", "Client messages decoded", ["type"], registry=r
        )
        self.protocol_errors = Counter(
            "fablecast_protocol_errors", "Error messages sent to clients", ["code"], registry=r
        )
        self.refused = Counter(
            "fablecast_refused",
            "Handshakes, hellos and messages refused by access policy (docs/security.md)",
            ["reason"],
            registry=r,
        )
        self.replies_dropped = Counter(
            "fablecast_replies_dropped",
            "Error replies not sent: over the connection's errors_per_s",
            registry=r,
        )
        self.resumes = Counter(
            "fablecast_resumes", "Resume requests by outcome", ["recovered"], registry=r
        )
        self.engine_tokens = Counter(
            "fablecast_engine_tokens", "Tokens received from the engine", registry=r
        )
        self.engine_failures = Counter(
            "fablecast_engine_failures", "Engine requests that failed or stalled", registry=r
        )
        self.token_latency = Histogram(
            "fablecast_token_latency_seconds",
            "Time from the engine yielding text to its frame being written to clients",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "fablecast_event_loop_lag_seconds",
            "How late the event loop ran a timer that should have fired on time",
            buckets=_LAG_BUCKETS,
            registry=r,
        )

        # The event log (server/store); read from its writer at scrape time.
        self.store_committed = Gauge(
            "fablecast_store_events_committed",
            "Events made durable in the event log since start",
            registry=r,
        )
        self.store_backlog = Gauge(
            "fablecast_store_backlog", "Events waiting to be written to the event log", registry=r
        )
        self.store_down = Gauge(
            "fablecast_store_down",
            "1 while the event log fails to write (rooms wait at their next story frame)",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
