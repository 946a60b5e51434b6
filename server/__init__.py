"""Fablecast server: the node, rooms, sessions, streams and fan-out, HTTP and metrics."""
