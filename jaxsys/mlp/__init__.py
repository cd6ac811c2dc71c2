"""mlp system."""
