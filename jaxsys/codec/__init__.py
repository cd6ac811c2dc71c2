"""codec system."""
