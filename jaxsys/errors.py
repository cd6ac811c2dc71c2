"""Project error types. Every user-facing failure raises a subclass of JaxsysError with a message
that says what is wrong and where."""


class JaxsysError(ValueError):
    """Base class of all jaxsys errors (a ValueError, so generic handlers still catch it)."""


class ShapeError(JaxsysError):
    """An array has the wrong shape or rank."""


class ConfigError(JaxsysError):
    """A configuration value is out of range or unknown."""


class DataError(JaxsysError):
    """Input data is missing, malformed or contains non-finite values."""
