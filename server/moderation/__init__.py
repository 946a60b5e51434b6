"""Moderation of generated text: the safety filter and the pre-broadcast holdback (pure)."""
