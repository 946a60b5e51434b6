"""Inference: the engine seam, its backends, prompts and the narrator service."""
