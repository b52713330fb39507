"""The example app's Redis when ``REDIS_URL`` is not set: fakeredis, served over TCP.

``EmbeddedRedis`` runs fakeredis's ``TcpFakeServer`` on a loopback port in a thread of the
example app's process. The app reaches it by URL like any Redis, and so can ``redis-cache``,
``redis-cli`` or a second process, for as long as the app runs; its data is lost when the app
stops. It is a stand-in for trying things out, not a Redis: it runs the scripts the
middleware sends (with ``fakeredis[lua]``) but lacks commands such as ``INFO``, so tools that
need them (Redis Insight) want a real Redis (``docker compose up``).
"""

from __future__ import annotations

import threading
from types import TracebackType

import fakeredis
import redis

#: The loopback port the example's Redis listens on by default: not Redis's own 6379, so a
#: local Redis keeps it, and outside the range the kernel hands out for outgoing connections.
DEFAULT_PORT = 6399
HOST = "127.0.0.1"


class PortInUse(Exception):
    """The port asked for is taken."""


class EmbeddedRedis:
    """fakeredis on ``127.0.0.1:port`` (``port=0``: any free port), in a background thread."""

    def __init__(self, port: int = DEFAULT_PORT) -> None:
        self.port = port
        self._server: fakeredis.TcpFakeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The URL to reach it: ``redis://127.0.0.1:<port>/0``."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> str:
        """Listen, serve in a thread and warm up; return the URL.

        Raises ``PortInUse`` when the port is taken. The warm-up (a ``PING`` and a first
        script) loads the Lua runtime now, so that the app's first miss does not spend the
        middleware's 100 ms Redis budget on it.
        """
        try:
            server = fakeredis.TcpFakeServer((HOST, self.port))
        except OSError as exc:
            raise PortInUse(f"{HOST}:{self.port} is taken ({exc.strerror or exc})") from None
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, name="embedded-redis", daemon=True
        )
        self._thread.start()
        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.ping()
            client.eval("return 1", 0)
        return self.url

    def stop(self) -> None:
        """Stop serving and close the listening socket (its data is gone)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
