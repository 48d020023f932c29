"""optuna-dashboard on the study storage, read-only unless asked; trial artifacts, study notes."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from search.base.errors import UsageError, one_line
from search.base.names import shown
from search.interfaces.dashboard_views import ConfirmationPages, ReadOnlyNotice

if TYPE_CHECKING:
    from search.tuning.storage import StorageOpener

LOOPBACK = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY = ("read-only: start with ALLOW_WRITES=1 (make dashboard ALLOW_WRITES=1, or --allow-writes) "
             "to delete, rename or edit")
WRONG_HOST = (
    "the Host header does not name this dashboard (DNS rebinding guard): "
    "open it at the address it printed, or restart it with --allowed-host NAME"
)
_HOST = re.compile(r"(?P<name>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?", re.I)
Hosts = frozenset[tuple[str, int | None]]  # (name, port); port None: any port
STALLED_SECONDS = 60  # how long an open connection may send nothing before it is closed


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
        # optuna-dashboard reads request.headers["Accept-Encoding"] for its static files: a 500
        # for a client that sends none (curl, scripts); none means any encoding (RFC 9110)
        environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")
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


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, one thread per connection: a request that stalls
    (or a slow client) holds its own thread only, never the dashboard."""

    daemon_threads = True  # Ctrl-C does not wait for open connections

    def __init__(self, address: tuple, family: socket.AddressFamily) -> None:
        self.address_family = family  # read by TCPServer when it makes the socket
        super().__init__(address, _Handler)


class _Handler(WSGIRequestHandler):
    timeout = STALLED_SECONDS  # a connection that sends nothing for this long is closed


def bind(host: str, port: int, app: Callable) -> WSGIServer:
    """A threaded WSGI server for ``app``, bound and listening on ``host:port``; any failure
    (a name that does not resolve, an address not on this machine, a port in use) is one line."""
    where = f"{host}:{port}" if host.isprintable() and len(host) <= 100 else f"{shown(host)}:{port}"
    try:
        family, *_, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                 flags=socket.AI_PASSIVE)[0]
        server = _ThreadingServer(address[:2], family)
    except socket.gaierror as exc:
        raise UsageError(f"cannot serve on {where} (the host name does not resolve: {exc.strerror})") from None
    except UnicodeError:  # IDNA: a part of the name is empty or over 63 characters
        raise UsageError(f"cannot serve on {where} (not a host name: a part empty or too long)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot serve on {where} ({getattr(exc, 'strerror', None) or one_line(exc)})") from None
    server.set_app(app)
    return server


def serve(
    opener: StorageOpener,
    artifacts: str,
    host: str,
    port: int,
    allow_writes: bool = False,
    extra_hosts: Iterable[str] = (),
) -> int:
    """Serve optuna-dashboard until interrupted, read-only unless ``allow_writes``; the address
    is printed once the port is bound (port 0 takes a free one, named there), so what it says is true."""
    from optuna_dashboard import wsgi

    from search.tuning.storage import artifact_store

    if not 0 <= port <= 65535:
        raise UsageError(f"PORT {port}: not a TCP port (1-65535, or 0 for any free one)")
    allowed_hosts(host, port, extra_hosts)  # a bad --allowed-host stops us before storage is opened
    storage = opener.open(read_only=True)
    app = ConfirmationPages(wsgi(storage.rdb, artifact_store=artifact_store(artifacts)), storage.rdb)
    guard = Guard(app if allow_writes else ReadOnlyNotice(app, READ_ONLY), frozenset(), allow_writes)
    server = bind(host, port, guard)
    port = server.server_port
    guard.hosts = allowed_hosts(host, port, extra_hosts)
    mode = "WRITABLE by anyone who can open it" if allow_writes else "read-only"
    address = f"[{host}]" if ":" in host else host
    print(
        f"optuna-dashboard at http://{address}:{port}/dashboard ({mode}; "
        f"storage {storage.masked}, artifacts {artifacts}); Ctrl-C stops it",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
