"""Engine backends behind the ``EngineClient`` seam."""
