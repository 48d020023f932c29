"""optuna-dashboard on the study storage, read-only unless asked; trial artifacts, study notes."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable

from search.base.errors import UsageError

LOOPBACK = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY = "read-only dashboard: restart it with --allow-writes to change studies"
WRONG_HOST = (
    "the Host header does not name this dashboard (DNS rebinding guard): "
    "open it at the address it printed, or restart it with --allowed-host NAME"
)
_HOST = re.compile(r"(?P<name>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?", re.I)
Hosts = frozenset[tuple[str, int | None]]  # (name, port); port None: any port


def _split_host(value: str) -> tuple[str, int | None] | None:
    """A Host value ``name``, ``name:port`` or ``[v6]:port`` as (lower-case name, port)."""
    if not (match := _HOST.fullmatch(value)) or int(match["port"] or 0) > 65535:
        return None
    return match["name"].lower().strip("[]"), int(match["port"]) if match["port"] else None


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> Hosts:
    """The names a request's Host header may give: the served address with its port, and ``extra``.

    A loopback bind answers to localhost, 127.0.0.1 and [::1]; another bind to its address and this
    machine's host name (and to the loopback names too when it binds every interface).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if host == "localhost" or (ip is not None and ip.is_loopback):
        names = {host, *LOOPBACK}
    else:
        names = {host, socket.gethostname(), socket.getfqdn()}
        if host == "" or (ip is not None and ip.is_unspecified):
            names |= set(LOOPBACK)
    allowed = {(name.lower(), port) for name in names if name}
    for entry in extra:
        if (parsed := _split_host(entry)) is None:
            raise UsageError(f"--allowed-host {entry!r}: not a host name, NAME:PORT or [IPv6]:PORT")
        allowed.add(parsed)
    return frozenset(allowed)


class Guard:
    """WSGI middleware: answer only to the allowed Host names and, unless allowed, refuse writes."""

    def __init__(self, app: Callable, hosts: Hosts, allow_writes: bool) -> None:
        self.app, self.hosts, self.allow_writes = app, hosts, allow_writes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = _split_host(environ.get("HTTP_HOST", ""))
        if host is None or not {(host[0], host[1] or 80), (host[0], None)} & self.hosts:
            return _refuse(environ, start_response, WRONG_HOST)
        if not self.allow_writes and environ["REQUEST_METHOD"] not in SAFE_METHODS:
            return _refuse(environ, start_response, READ_ONLY)
        return self.app(environ, start_response)


def _refuse(environ: dict, start_response: Callable, reason: str) -> list[bytes]:
    """403 with optuna-dashboard's error body, after reading the request (so no reset loses it)."""
    try:
        left = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        left = 0
    while left > 0 and (chunk := environ["wsgi.input"].read(min(left, 1 << 16))):
        left -= len(chunk)
    body = json.dumps({"reason": reason}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("403 Forbidden", headers)
    return [body]


def serve(
    storage_url: str | None,
    artifacts: str,
    host: str,
    port: int,
    allow_writes: bool = False,
    extra_hosts: Iterable[str] = (),
) -> int:
    """Serve optuna-dashboard until interrupted, read-only unless ``allow_writes``.

    Port 0 takes a free port; the address line printed once the port is bound names it.
    """
    from wsgiref.simple_server import WSGIServer

    from bottle import WSGIRefServer  # what optuna_dashboard.run_server serves with
    from optuna_dashboard import wsgi

    from search.tuning.storage import artifact_store, open_storage

    if not 0 <= port <= 65535:
        raise UsageError(f"PORT {port}: not a TCP port (1-65535, or 0 for any free one)")
    allowed_hosts(host, port, extra_hosts)  # a bad --allowed-host stops us before storage is opened
    storage = open_storage(storage_url, read_only=True)
    guard = Guard(wsgi(storage.rdb, artifact_store=artifact_store(artifacts)), frozenset(), allow_writes)
    mode = "WRITABLE by anyone who can open it" if allow_writes else "read-only"
    address = f"[{host}]" if ":" in host else host

    class Announced(WSGIServer):
        def server_bind(self) -> None:
            super().server_bind()
            guard.hosts = allowed_hosts(host, self.server_port, extra_hosts)
            print(
                f"optuna-dashboard at http://{address}:{self.server_port}/dashboard ({mode}; "
                f"storage {storage.masked}, artifacts {artifacts}); Ctrl-C stops it",
                flush=True,
            )

    try:
        WSGIRefServer(host=host, port=port, server_class=Announced).run(guard)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port} ({exc.strerror or exc})") from None
    return 0
