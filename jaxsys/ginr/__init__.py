"""ginr system."""
