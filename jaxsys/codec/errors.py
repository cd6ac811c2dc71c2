"""The codec's error type."""

from jaxsys.errors import JaxsysError


class CodecError(JaxsysError):
    """A compressed blob or container is truncated, corrupted or inconsistent."""
