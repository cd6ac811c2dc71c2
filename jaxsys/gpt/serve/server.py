"""Running the app: uvicorn on a loopback socket in a thread (tests, benchmarks), or in the
foreground (`jaxsys gpt serve`)."""

from __future__ import annotations

import socket
import threading
import time


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound listening TCP socket (port 0: a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class ServerThread:
    """uvicorn serving `app` on a loopback socket in a background thread (tests, benchmarks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = loopback_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 60:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def serve(app, host: str, port: int) -> None:
    """Serve `app` (from `create_app`) until interrupted (uvicorn.run)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=30)
