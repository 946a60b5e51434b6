"""Fablecast server: sessions, rooms, fan-out hub, HTTP probes and metrics."""
