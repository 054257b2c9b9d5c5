"""One web worker of `drx serve`: uvicorn on the listening socket its supervisor passes down
(`interfaces/supervisor.py`), serving the app each worker builds from the environment
(`interfaces.http.asgi:app`), with the bounds of `interfaces/server.py`.

    python -m interfaces.web_worker FD HOST PORT

The kernel hands each new connection to one of the workers accepting on the socket. The worker
ends, as on SIGTERM, when its supervisor is gone.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import uvicorn

from interfaces.server import APP_FACTORY, server_options

PARENT_CHECK_S = 1.0


def watch_parent(server: uvicorn.Server) -> None:
    """Stop the server when the process that started this one is gone (its parent changes)."""
    parent = os.getppid()

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                server.should_exit = True
                return
            time.sleep(PARENT_CHECK_S)

    threading.Thread(target=watch, name="drx-parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    fd, host, port = int(argv[0]), argv[1], int(argv[2])
    sock = socket.socket(fileno=fd)
    server = uvicorn.Server(uvicorn.Config(APP_FACTORY, factory=True, **server_options(host, port)))
    watch_parent(server)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
