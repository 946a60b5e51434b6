"""Fablecast Python SDK: an async client with reconnect and resume, and the ``fablecast`` CLI."""
