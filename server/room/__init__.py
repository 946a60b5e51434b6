"""The room core (pure: state + event + now -> effects) and its runner."""
