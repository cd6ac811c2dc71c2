"""gpt system."""
