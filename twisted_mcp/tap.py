"""
The twistd plugin: command-line options and the service for twistd.

This is the one module that touches the global reactor.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from twisted.python import usage

from twisted_mcp import __version__
from twisted_mcp.config import Config, ConfigError
from twisted_mcp.config.loader import load
from twisted_mcp.ops import logs

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CONFIG = 78


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = (
        "Runs the twisted-mcp gateway: one MCP server (on stdin/stdout) in front of every MCP "
        "server named in the configuration file's mcpServers mapping. The gateway starts and "
        "supervises each server as a child process, merges their tools into one catalog (each "
        "tool exposed as <server>__<tool>), and routes every call to the server that owns it. "
        "Stdout carries only MCP messages; logs go to stderr (or twistd's --logfile). Run it as "
        "`twistd -n --pidfile= mcp-gateway --config FILE` (this is the command an MCP client "
        "launches) or `twist mcp-gateway --config FILE`. As a daemon serving many clients: "
        "`twistd --pidfile PATH --logfile PATH mcp-gateway --config FILE --listen unix:PATH` "
        "(clients then run `twisted-mcp connect unix:path=PATH`). SIGHUP re-reads the config; "
        "SIGTERM drains calls in flight and stops."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "The configuration file (YAML or JSON) with a top-level mcpServers mapping, as MCP "
            "clients write it (command, args, env, cwd for each server); ${VAR} and "
            "${VAR:-default} are expanded. Required.",
        ],
    ]
    optFlags = [
        ["check", None, "Validate the configuration, print what it would start, and exit (0 or 78)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    optParameters = optParameters + [
        [
            "admin",
            None,
            None,
            "Serve the admin endpoint (/healthz, /readyz, /metrics, /status; POST /reload, /kill, "
            "/pins/approve, /revoke) on this Twisted endpoint, e.g. tcp:9100:interface=127.0.0.1. Off by "
            "default; gateway.adminToken in the config protects it with a bearer token.",
        ],
    ]

    optParameters = optParameters + logs.OPTIONS

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    opt_listen.__doc__ = (
        "Serve MCP clients on this Twisted endpoint instead of stdin/stdout (repeatable), e.g. "
        "unix:/run/twisted-mcp/gw.sock:mode=660, tcp:8765:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem (add :clientCA=ca.pem to require client "
        "certificates), or systemd:domain=UNIX:index=0 (socket activation). Every connection is its "
        "own MCP session; the backends are shared. Prefix with http: to serve the Streamable HTTP "
        "transport there instead (e.g. http:tcp:8080:interface=127.0.0.1; path /mcp, see the http: "
        "config section). Prefix with profile:NAME: to serve only that profile of the config's "
        "profiles: section there (e.g. profile:ops:unix:/run/twisted-mcp/ops.sock, "
        "profile:dev:http:tcp:8081)."
    )

    def opt_version(self) -> None:
        """Print the version of twisted-mcp and exit."""
        sys.stderr.write(f"twisted-mcp {__version__}\n")
        raise SystemExit(0)

    def postOptions(self) -> None:
        path = self["config"]
        if not path:
            _fail("no configuration file given: use --config FILE (see `twistd mcp-gateway --help`)", EX_USAGE)
        try:
            self.loaded: Config = load(path)
        except ConfigError as e:
            _fail(e.render() + "\nThe gateway did not start.", EX_CONFIG)
        self.listens = _listens(self["listen"], self.loaded)
        if self["check"]:
            from twisted_mcp.urls import shown_args, shown_url

            config = self.loaded
            lines = [f"{path}: OK, {len(config.servers)} server(s)"]
            for s in config.servers:
                if hasattr(s, "command"):
                    lines.append(f"  {s.name}: {s.command} {shown_args(s.args)}".rstrip())
                else:
                    lines.append(f"  {s.name}: {shown_url(s.url)} ({'legacy HTTP+SSE' if s.transport == 'sse' else 'Streamable HTTP'})")
            for name in config.disabled:
                lines.append(f"  {name}: disabled")
            if config.profiles:
                lines.append(f"profiles: {', '.join(sorted(config.profiles))}")
            sys.stderr.write("\n".join(lines) + "\n")
            raise SystemExit(0)


def _listens(values: list[str], config: Config) -> list[Any]:
    """Every C{--listen} value taken apart; one that names no profile of C{config} stops start-up."""
    from twisted_mcp.frontends.listeners import parse_listen, profile_refusal

    listens = []
    for value in values:
        try:
            listen = parse_listen(value)
        except ValueError as e:
            _fail(str(e), EX_USAGE)
        refusal = profile_refusal(listen, config.profiles)
        if refusal is not None:
            _fail(refusal + "\nThe gateway did not start.", EX_CONFIG)
        listens.append(listen)
    return listens


def _fail(message: str, code: int) -> None:
    # stderr, never stdout: stdout belongs to the MCP client.
    sys.stderr.write(f"twisted-mcp: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _claim_stdout() -> int:
    """
    Keep the real stdout for MCP messages only, and point fd 1 (and so
    sys.stdout, print(), and twistd's own logging to stdout) at stderr.

    @return: a new descriptor for the original stdout.
    """
    try:
        # A description of its own, so that making it non-blocking (as
        # StandardIO does) cannot make a shared stderr non-blocking too.
        proto = os.open("/proc/self/fd/1", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        proto = os.dup(1)
    os.dup2(2, 1)
    return proto


def _reload_on_signal(reactor: Any, service: Any, load: Any) -> Any:
    """SIGHUP: reload as C{POST /reload} does; nobody waits for the answer."""
    from twisted.logger import Logger

    from twisted_mcp.reload import reload_in_a_thread

    d = reload_in_a_thread(reactor, service, load)
    d.addErrback(lambda failure: Logger(namespace="twisted_mcp.tap").failure("reload failed", failure))
    return d


def _install_reload_handler(reactor: Any, reload: Any) -> None:
    """
    SIGHUP reloads the configuration.  Installed at once, before the
    listeners accept anything: SIGHUP's default action ends the process,
    and an operator (or C{systemctl reload}) may send it as soon as the
    gateway answers; one that arrives before the reactor runs is applied
    when it starts.
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="twisted_mcp.tap")

    def hup(signum: int, frame: Any) -> None:
        reactor.callFromThread(log.info, "received SIGHUP: reloading the configuration")
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, hup)


def _install_signal_handlers(reactor: Any, stop: Any) -> None:
    """
    SIGTERM and SIGINT stop the gateway cleanly and it exits 0 (twistd's
    own handlers would re-raise the signal at exit).  A second signal cuts
    the grace period for calls in flight short.  (Installed once the
    reactor runs: it installs its own for these two as it starts.)
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="twisted_mcp.tap")

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        reactor.callFromThread(
            log.info, "received {signal}: stopping (another signal cancels calls in flight at once)", signal=name
        )
        reactor.callFromThread(stop)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _bind(description: str, factory: Any, reactor: Any, shown: str | None = None) -> Any:
    """Listen now (before twistd daemonizes); exit 69 with a clear message (naming C{shown}, the
    option's value, if given) if it cannot."""
    from twisted.python.failure import Failure

    from twisted_mcp.frontends.endpoints import server_endpoint

    name = shown or description
    try:
        d = server_endpoint(reactor, description).listen(factory)
    except OSError as e:
        _fail(f"cannot listen on {name!r}: {e.strerror or e}", EX_UNAVAILABLE)
    except Exception as e:
        _fail(f"cannot listen on {name!r}: {e}", EX_USAGE)
    result: list[Any] = []
    d.addBoth(result.append)
    if not result:
        _fail(f"listening on {name!r} did not complete at start-up", EX_UNAVAILABLE)
    if isinstance(result[0], Failure):
        _fail(f"cannot listen on {name!r}: {result[0].getErrorMessage()}", EX_UNAVAILABLE)
    return result[0]


def _admin(description: str, service: Any, reactor: Any, load: Any) -> None:
    from twisted.application.service import Service
    from twisted.logger import Logger

    from twisted_mcp.ops.admin import AdminResource, AdminSite
    from twisted_mcp.reload import reload_in_a_thread

    port = _bind(description, AdminSite(AdminResource(service, lambda: reload_in_a_thread(reactor, service, load)), reactor), reactor)

    class AdminService(Service):
        def startService(self) -> None:
            super().startService()
            Logger(namespace="twisted_mcp.ops.admin").info("admin endpoint on {endpoint}", endpoint=description)

        def stopService(self) -> Any:
            super().stopService()
            return port.stopListening()

    service.add_frontend(lambda gateway: AdminService())


def _listen(listens: list[Any], service: Any, reactor: Any) -> None:
    """Bind every endpoint now (before twistd daemonizes): one that cannot
    bind stops start-up with a clear error."""
    from twisted_mcp.frontends.admission import Admission, raise_descriptor_limit
    from twisted_mcp.frontends.listeners import listeners_by_profile
    from twisted_mcp.frontends.stream import SessionFactory, SocketFrontend

    settings = service.config.gateway
    admission = Admission(
        settings.maxClients, settings.maxClientsPerPeer, settings.descriptorReserve, raise_descriptor_limit()
    )
    service.profile_listeners = listeners_by_profile(listens)
    for listen in listens:
        description = listen.description
        if listen.http:
            _listen_http(listen, service, reactor, admission)
            continue
        factory = SessionFactory(
            service.gateway,
            reactor,
            settings,
            admission,
            listen.endpoint.split(":", 1)[0],
            description,
            view=listen.profile,
        )
        port = _bind(listen.endpoint, factory, reactor, description)
        service.add_frontend(lambda gateway, p=port, f=factory, desc=description: SocketFrontend(desc, p, f))


def _listen_http(listen: Any, service: Any, reactor: Any, admission: Any) -> None:
    """A Streamable HTTP listener: C{http:} and a Twisted endpoint string (after any C{profile:<name>:})."""
    description = listen.description
    from twisted_mcp.frontends.http import HttpFrontend, http_site
    from twisted_mcp.policy.principal import IdentityError

    settings = service.config.gateway
    identity = service.config.identity
    verify = None
    service.http_jwt_at_start = identity is not None and identity.jwt is not None
    if service.http_jwt_at_start:

        def verify(token: str) -> Any:
            authenticator = service.authenticator  # the current one: a reload may replace or remove it
            if authenticator is None:
                raise IdentityError("bearer tokens cannot be verified: identity.jwt was removed by a reload", "keys")
            return authenticator.verify_bearer(token)

    site = http_site(service.gateway, reactor, settings, service.config.http, description, admission, verify, view=listen.profile)
    port = _bind(listen.endpoint, site, reactor, description)
    service.add_frontend(lambda gateway: HttpFrontend(description, port, site, settings.shutdownGrace))


def _freeze_startup_heap() -> None:
    """
    Leave what start-up made (modules, the configuration, the services) out
    of the cyclic garbage collector's work from now on: a full collection
    otherwise walks all of it again and again under load, for nothing
    (about 35 ms each; with this, a few ms).  The price: a start-up object
    that later becomes cyclic garbage (a backend a reload removed) is never
    freed; that is bounded by what start-up made, once.
    """
    gc.collect()
    gc.freeze()


def makeService(options: Options) -> Any:
    from twisted_mcp.tls_on_demand import lean_reactor_import

    # twistd's first import of the reactor (unless one is installed already,
    # as by --reactor): without pyOpenSSL, loaded at the first use of TLS.
    # Import nothing else in this block: a module that guards its OpenSSL
    # import (endpoints, twisted.web.client) would stay without TLS for good.
    with lean_reactor_import():
        from twisted.internet import reactor
    from twisted.internet import stdio

    from twisted_mcp.backends.stdio import start_reaping
    from twisted_mcp.frontends.stream import StdioFrontend
    from twisted_mcp.service import GatewayService
    from twisted_mcp.wire._pipes import read_in_large_chunks
    from twisted_mcp.wire._writer import coalesce_per_turn

    config = options.loaded
    # Orphaned descendants of the backends are reparented to the gateway, so
    # that stopping a backend ends them too, and collected when they exit.
    # In the process that runs the reactor (twistd forks to daemonize; the
    # setting is not inherited), and before the service starts its backends.
    reactor.addSystemEventTrigger("before", "startup", start_reaping, reactor)
    coalesce_per_turn(reactor)
    service = GatewayService(config, reactor, reactor)

    def client_gone() -> None:
        if not stopping:
            stop()

    def connect(protocol: Any) -> Any:
        transport = stdio.StandardIO(protocol, stdin=0, stdout=out_fd, reactor=reactor)
        read_in_large_chunks(transport._reader, widen_pipe=False)
        return transport

    stopping: list[bool] = []

    def stop() -> None:
        """Stop once; a later request to stop cuts the grace period short."""
        if stopping:
            service.hurry()
            return
        stopping.append(True)
        if reactor.running:
            reactor.stop()

    path = options["config"]
    reload_config = lambda: load(path)  # noqa: E731
    _install_reload_handler(reactor, lambda: _reload_on_signal(reactor, service, reload_config))
    reactor.callWhenRunning(_install_signal_handlers, reactor, stop)
    reactor.callWhenRunning(_freeze_startup_heap)
    settings = config.gateway
    if options["admin"]:
        _admin(options["admin"], service, reactor, reload_config)
    if options["listen"]:
        _listen(options.listens, service, reactor)
        return logs.attach(service, options, reactor)
    out_fd = _claim_stdout()
    service.add_frontend(
        lambda gateway: StdioFrontend(
            gateway,
            reactor,
            settings,
            connect,
            client_gone,
        )
    )
    return logs.attach(service, options, reactor)
