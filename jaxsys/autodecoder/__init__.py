"""autodecoder system."""
