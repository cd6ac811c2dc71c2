"""Fixtures shared by the codec tests."""

import signal

import pytest


@pytest.fixture
def watchdog():
    """A SIGALRM after 120 s turns a decoder hang into a test failure."""

    def boom(*_):
        raise TimeoutError("decoder did not terminate")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
