"""``fablecast eval``: score the story on a real engine."""
