"""``fablecast tune``: the narrator's LoRA adapter, from data the repository generates."""
