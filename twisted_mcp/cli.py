"""
The C{twisted-mcp} command: operations beside the gateway itself.

    twisted-mcp check-config FILE            validate a configuration (exit 0 or 78)
    twisted-mcp pin --config FILE            approve the current tool definitions
    twisted-mcp audit verify --config FILE   check the audit trail's hash chain
    twisted-mcp audit checkpoint --config FILE [-o OUT]   a signed checkpoint of its head
    twisted-mcp audit init-db --config FILE [--dsn DSN] [--grant ROLE] [--print]
                                             create the PostgreSQL audit tables
    twisted-mcp connect ENDPOINT             bridge stdin/stdout to a gateway's socket
    twisted-mcp import SOURCE [--from FORMAT] [--project PATH] [-o OUT] [--force]
                                             turn a client's MCP config (Claude Desktop,
                                             Claude Code, Cursor, VS Code) into a gateway config
    twisted-mcp status --admin ADDR [--token-file PATH] [--json] [--strict]
                                             what a running gateway is doing
    twisted-mcp reload (--admin ADDR [--token-file PATH] | --pidfile PATH)
                                             re-read a running gateway's configuration
    twisted-mcp kill --admin ADDR (--principal N | --backend N | --tool N) [--off]
                                             set (or, with --off, lift) the kill switch
    twisted-mcp approve --admin ADDR (--tool NAME ... | --all)
                                             approve quarantined tools (pinning)

ADDR is the gateway's admin endpoint: a URL (http://127.0.0.1:9100) or the
Twisted endpoint string given to the gateway's --admin
(tcp:9100:interface=127.0.0.1, unix:/run/twisted-mcp/admin.sock).  The
bearer token comes from --token-file or the environment variable
TWISTED_MCP_ADMIN_TOKEN; it is never printed.

Exit codes follow sysexits:

    0   success
    64  bad usage (EX_USAGE)
    65  bad data: a broken audit chain, a file that is not a client config,
        a request the gateway refused as invalid (EX_DATAERR)
    66  an input file (SOURCE, --token-file, --pidfile) is missing (EX_NOINPUT)
    69  a service is unavailable: the admin endpoint cannot be reached or
        answers 5xx, the pid file names no gateway (EX_UNAVAILABLE)
    73  the output file exists (without --force) or cannot be created (EX_CANTCREAT)
    75  status --strict: the gateway answered, but not every backend is up (EX_TEMPFAIL)
    76  the admin endpoint answered something that is not the expected JSON (EX_PROTOCOL)
    77  the admin endpoint wants a (different) token, or the process may not
        be signalled (EX_NOPERM)
    78  a bad configuration, or a reload the gateway rejected (EX_CONFIG)

C{status} exits 0 when the gateway answered, even when some backend is not
up: it is a report, and says so on stderr ("N of M backends are not up").
Scripts that want a failure then use C{--strict} (exit 75, EX_TEMPFAIL:
backends restart by themselves, so try again later); load balancers use the
admin endpoint's C{/readyz}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted_mcp import __version__

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

TOKEN_ENV = "TWISTED_MCP_ADMIN_TOKEN"


def _load(path: str) -> Any:
    from twisted_mcp.config import ConfigError
    from twisted_mcp.config.loader import load

    try:
        return load(path)
    except ConfigError as e:
        sys.stderr.write(e.render() + "\n")
        raise SystemExit(EX_CONFIG)


def _log_to_stderr(level: str = "warn") -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )


def pin(args: argparse.Namespace) -> int:
    """Start every backend, wait for discovery, write the lock file, stop."""
    from twisted.internet import task

    from twisted_mcp.policy.pinning import read_lock, write_lock
    from twisted_mcp.policy.pipeline import Policy
    from twisted_mcp.policy.rules import PolicyConfig

    config = _load(args.config)
    lock = config.policy.lock_file or os.path.join(os.path.dirname(os.path.abspath(args.config)), "tools.lock.json")
    _log_to_stderr("warn")
    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        from twisted_mcp.service import GatewayService

        service = GatewayService(config, reactor, reactor)
        # Pinning itself must not review (and warn about) what it is approving.
        service.gateway.policy = Policy(PolicyConfig(), config.gateway.separator, reactor)
        for b in service.backends:
            b.startService()
        service.gateway.start()
        try:
            await service.gateway.when_ready()
            catalog = service.gateway.catalog
            outcome["down"] = sorted(b.name for b in service.backends if b.state.value != "up")
            entries = [
                (name, e.backend.name, e.tool, {**e.definition, "name": e.tool})
                for name, e in catalog.entries.items()
            ]
            try:
                before = read_lock(lock)
            except (OSError, ValueError):
                before = {}
            # Keep the approvals of servers that are not up now.
            kept = [
                (name, pin["backend"], pin.get("tool", ""), pin)
                for name, pin in before.items()
                if pin.get("backend") in outcome["down"] and name not in catalog.entries
            ]
            after = write_lock(lock, entries, kept)
            outcome["added"] = sorted(set(after) - set(before))
            outcome["removed"] = sorted(set(before) - set(after))
            outcome["changed"] = sorted(n for n in after if n in before and before[n].get("digest") != after[n]["digest"])
            outcome["count"] = len(after)
        finally:
            from twisted_mcp.backends.stdio import stop_all

            await stop_all(service.backends)

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(run(reactor))

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            sys.stderr.write("twisted-mcp pin: failed (see above); the lock file was not changed\n")
            return EX_UNAVAILABLE
    print(f"{lock}: {outcome['count']} tool(s) pinned")
    for label in ("added", "changed", "removed"):
        for name in outcome[label]:
            print(f"  {label}: {name}")
    if outcome["down"]:
        sys.stderr.write(
            "warning: these servers were not up; their earlier approvals were kept, and their "
            f"new or changed tools are not pinned: {', '.join(outcome['down'])}\n"
        )
        return EX_UNAVAILABLE
    return EX_OK


def check_config(args: argparse.Namespace) -> int:
    """Validate a configuration without starting anything."""
    from twisted_mcp.urls import shown_args, shown_url

    config = _load(args.file)  # exits 78, listing every problem
    print(f"{args.file}: OK, {len(config.servers)} server(s)")
    for s in config.servers:
        if hasattr(s, "command"):
            print(f"  {s.name}: stdio, {s.command} {shown_args(s.args)}".rstrip())
        else:
            print(f"  {s.name}: {'legacy HTTP+SSE' if s.transport == 'sse' else 'Streamable HTTP'}, {shown_url(s.url)}")
    for name in config.disabled:
        print(f"  {name}: disabled")
    return EX_OK


def _audit_config(args: argparse.Namespace) -> Any:
    """The config's audit section, with the key of --key-file if given; exits when there is no trail."""
    import attrs

    from twisted_mcp.policy.audit_keys import load_key

    config = _load(args.config)
    audit = config.audit
    if audit is None or audit.sink == "none":
        sys.stderr.write(f"{args.config}: no audit trail is configured (no `audit:` section)\n")
        raise SystemExit(EX_CONFIG)
    if args.key_file:
        try:
            key = load_key("keyFile", args.key_file, os.environ)
        except ValueError as e:
            sys.stderr.write(f"--key-file: {e}\n")
            raise SystemExit(EX_NOINPUT)
        audit = attrs.evolve(audit, key=key, keySource=f"--key-file {args.key_file}")
    return audit


def _verified(audit: Any, checkpoint: bytes | None = None) -> Any:
    """The result of verify; exits when the trail cannot be read (69) or is broken (65)."""
    from twisted_mcp.policy.audit import verify

    try:
        result = verify(audit, checkpoint)
    except Exception as e:
        sys.stderr.write(f"cannot read the audit trail: {e}\n")
        raise SystemExit(EX_UNAVAILABLE)
    if result.unavailable:
        sys.stderr.write(f"cannot read the audit trail: {result.message}\n")
        raise SystemExit(EX_UNAVAILABLE)
    if not result.ok:
        print(f"BROKEN after {result.records} good record(s): {result.message}")
        raise SystemExit(EX_DATAERR)
    return result


def audit_verify(args: argparse.Namespace) -> int:
    audit = _audit_config(args)
    checkpoint = None
    if args.checkpoint:
        try:
            with open(args.checkpoint, "rb") as f:
                checkpoint = f.read(1 << 20)
        except OSError as e:
            sys.stderr.write(f"cannot read the checkpoint {args.checkpoint}: {e.strerror}\n")
            return EX_NOINPUT
    result = _verified(audit, checkpoint)
    print(f"OK: {result.message}")
    return EX_OK


def audit_checkpoint(args: argparse.Namespace) -> int:
    """Verify the trail and write a signed checkpoint of its head."""
    import json
    import time

    from twisted_mcp.policy.audit_keys import make_checkpoint

    audit = _audit_config(args)
    if audit.key is None:
        sys.stderr.write(
            f"{args.config}: a checkpoint is signed with the trail's key: set audit.keyFile, keyEnv or keyCredential "
            "(or pass --key-file)\n"
        )
        return EX_CONFIG
    result = _verified(audit)
    if result.head is None:
        sys.stderr.write("the trail has no records yet: nothing to vouch for\n")
        return EX_DATAERR
    seq, digest = result.head
    text = json.dumps(make_checkpoint(seq, digest, audit.describe(), time.time(), audit.key), sort_keys=True) + "\n"
    if args.output:
        try:
            with open(args.output, "x") as f:
                f.write(text)
        except OSError as e:
            sys.stderr.write(f"cannot create {args.output}: {e.strerror}\n")
            return EX_CANTCREAT
    else:
        sys.stdout.write(text)
    sys.stderr.write(f"checkpoint of seq {seq}: keep it where this host cannot write, and check it with "
                     "`twisted-mcp audit verify --checkpoint FILE`\n")
    return EX_OK


def audit_init_db(args: argparse.Namespace) -> int:
    """Create the PostgreSQL audit tables and grant the gateway's role INSERT and SELECT only."""
    from twisted_mcp.policy.audit import _safe_dsn, init_postgres, postgres_setup_sql

    config = _load(args.config)
    audit = config.audit
    if audit is None or audit.sink != "postgres":
        sys.stderr.write(f"{args.config}: the audit sink is not postgres (the file and sqlite sinks need no setup)\n")
        return EX_CONFIG
    try:
        statements = postgres_setup_sql(audit.table, args.grant)
    except ValueError as e:
        sys.stderr.write(f"--grant: {e}\n")
        return EX_USAGE
    if args.print_sql:
        print(";\n".join(statements) + ";")
        return EX_OK
    dsn = args.dsn or audit.dsn or ""
    try:
        init_postgres(dsn, audit.table, args.grant)
    except Exception as e:
        sys.stderr.write(f"cannot set up table {audit.table} in {_safe_dsn(dsn)}: {' '.join(str(e).split())}\n")
        return EX_UNAVAILABLE
    granted = f"; {args.grant} may INSERT and SELECT, nothing else" if args.grant else ""
    print(f"table {audit.table} is ready in {_safe_dsn(dsn)}{granted}")
    return EX_OK


def connect(args: argparse.Namespace) -> int:
    """Bridge stdin/stdout to a running gateway's socket."""
    from twisted.internet import stdio, task
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import clientFromString
    from twisted.internet.interfaces import IHalfCloseableProtocol
    from twisted.internet.protocol import Protocol
    from zope.interface import implementer

    outcome: dict[str, Any] = {"code": EX_OK}

    class Remote(Protocol):
        def __init__(self, done: Deferred[None]) -> None:
            self.done = done

        def dataReceived(self, data: bytes) -> None:
            local.transport.write(data)

        def connectionLost(self, reason: Any = None) -> None:
            local.transport.loseConnection()
            if not self.done.called:
                self.done.callback(None)

    @implementer(IHalfCloseableProtocol)
    class Local(Protocol):
        remote: Any = None

        def dataReceived(self, data: bytes) -> None:
            self.remote.transport.write(data)

        def readConnectionLost(self) -> None:
            # The client is done sending: tell the gateway, which answers
            # what is in flight, then closes.
            try:
                self.remote.transport.loseWriteConnection()
            except AttributeError:
                self.remote.transport.loseConnection()

        def writeConnectionLost(self) -> None:
            self.remote.transport.loseConnection()

        def connectionLost(self, reason: Any = None) -> None:
            pass

    local = Local()

    async def run(reactor: Any) -> None:
        done: Deferred[None] = Deferred()
        factory = __import__("twisted.internet.protocol", fromlist=["Factory"]).Factory.forProtocol(lambda: Remote(done))
        try:
            remote = await clientFromString(reactor, args.endpoint).connect(factory)
        except Exception as e:
            sys.stderr.write(f"twisted-mcp connect: cannot connect to {args.endpoint}: {e}\n")
            outcome["code"] = EX_UNAVAILABLE
            return
        local.remote = remote
        stdio.StandardIO(local, reactor=reactor)
        await done

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit:
        pass
    return int(outcome["code"])


# --- import --------------------------------------------------------------------


def _write_private(path: str, text: str, force: bool, source: str) -> str | None:
    """Write C{text} to C{path} with mode 0600; the reason it failed, or None."""
    import tempfile

    try:
        if os.path.exists(path) and os.path.samefile(path, source):
            return f"{path} is the file being imported; choose another output file"
    except OSError:
        pass
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return f"{path} already exists; use --force to replace it"
        except OSError as e:
            return f"cannot create {path}: {e.strerror or e}"
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return None
    if os.path.isdir(path):
        return f"cannot create {path}: it is a directory"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as e:
        return f"cannot create {path}: {e.strerror or e}"
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp: mode 0600
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        return f"cannot create {path}: {e.strerror or e}"
    return None


def import_(args: argparse.Namespace) -> int:
    """Turn an MCP client's configuration into a gateway configuration."""
    from twisted_mcp import importer

    err = sys.stderr.write
    if args.output and os.path.exists(args.output) and not args.force:
        # Say so before doing anything (the write itself refuses too).
        err(f"twisted-mcp import: {args.output} already exists; use --force to replace it\n")
        return EX_CANTCREAT
    try:
        imported = importer.import_config(args.source, args.from_, args.project)
        base_dir = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
        importer.validate(imported, base_dir, os.environ)
    except importer.ImportFailure as e:
        err(f"twisted-mcp import: {e.message}\n")
        return {"noinput": EX_NOINPUT, "usage": EX_USAGE}.get(e.kind, EX_DATAERR)
    text = importer.render(imported)
    if args.output:
        problem = _write_private(args.output, text, args.force, args.source)
        if problem is not None:
            err(f"twisted-mcp import: {problem}\n")
            return EX_CANTCREAT
    else:
        sys.stdout.write(text)
        sys.stdout.flush()

    lines = [f"read {args.source} as {importer.LABELS[imported.format]} ({imported.reason})"]
    lines += [f"  {n}" for n in imported.notes]
    where = f"to {args.output} (mode 0600)" if args.output else "to standard output"
    lines.append(f"{len(imported.servers)} server(s) imported, written {where}:")
    for name, entry in imported.servers.items():
        was = f" (was {imported.renamed[name]!r})" if name in imported.renamed else ""
        lines.append(f"  {name}{was}: {importer.describe(entry)}")
    if imported.warnings:
        lines.append(f"{len(imported.warnings)} warning(s):")
        lines += [f"  - {w}" for w in imported.warnings]
    needed = importer.references(imported.servers)
    if needed:
        lines.append("the gateway reads these environment variables when it starts; set them where it runs:")
        width = max(len(n) for n in needed)
        for name in sorted(needed):
            why = imported.variables.get(name, "")
            unset = "" if name in os.environ else "(not set here)"
            lines.append(f"  {name:<{width}}  {'  '.join(x for x in (why, unset) if x)}".rstrip())
    if args.output:
        first = "set them, then " if any(n not in os.environ for n in needed) else ""
        lines.append(f"next: {first}twisted-mcp check-config {args.output}")
    err(imported.redact("\n".join(lines)) + "\n")
    return EX_OK


# --- the admin endpoint ---------------------------------------------------------


class _Fail(Exception):
    """Stop an admin command: print C{message} on stderr, exit with C{code}."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _split_endpoint(text: str) -> list[str]:
    """Split a Twisted endpoint string on its colons (C{\\:} is a literal colon)."""
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


class _Admin:
    """Where the admin endpoint is: C{scheme} http, https or unix."""

    def __init__(self, scheme: str, host: str = "", port: int = 0, socket_path: str = "", prefix: str = "") -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.socket_path = socket_path
        self.prefix = prefix.rstrip("/")

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"

    def connection(self, timeout: float) -> Any:
        import http.client
        import socket

        if self.scheme == "unix":
            socket_path = self.socket_path

            class UnixHTTPConnection(http.client.HTTPConnection):
                def connect(self) -> None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(self.timeout)
                    try:
                        sock.connect(socket_path)
                    except BaseException:
                        sock.close()
                        raise
                    self.sock = sock

            return UnixHTTPConnection("localhost", timeout=timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


_ADMIN_FORMS = (
    "expected a URL (http://127.0.0.1:9100), HOST:PORT, or the Twisted endpoint given to the gateway's "
    "--admin (tcp:9100:interface=127.0.0.1, unix:/run/twisted-mcp/admin.sock)"
)


def parse_admin(text: str) -> _Admin:
    """Where to reach the admin endpoint named by C{--admin}."""
    from urllib.parse import urlsplit

    def port_of(value: str) -> int:
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise _Fail(EX_USAGE, f"--admin {text}: {value!r} is not a port number; {_ADMIN_FORMS}")
        return int(value)

    def loopback(host: str, v6: bool) -> str:
        if host in ("", "0.0.0.0"):
            return "::1" if v6 else "127.0.0.1"
        if host == "::":
            return "::1"
        return host

    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.hostname:
            raise _Fail(EX_USAGE, f"--admin {text}: no host; {_ADMIN_FORMS}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise _Fail(EX_USAGE, f"--admin {text}: not a valid port; {_ADMIN_FORMS}")
        return _Admin(parts.scheme, parts.hostname, port, prefix=parts.path)
    kind, _, rest = text.partition(":")
    if kind in ("unix", "tcp", "tcp6", "ssl") and rest:
        fields = _split_endpoint(rest)
        positional = [f for f in fields if "=" not in f]
        options = dict(f.split("=", 1) for f in fields if "=" in f)
        if kind == "unix":
            path = options.get("path") or options.get("address") or (positional[0] if positional else "")
            if not path:
                raise _Fail(EX_USAGE, f"--admin {text}: no socket path; {_ADMIN_FORMS}")
            return _Admin("unix", socket_path=path)
        v6 = kind == "tcp6" or ":" in options.get("interface", "")
        if "port" in options:
            host = options.get("host") or options.get("interface") or ""
            port = port_of(options["port"])
        elif len(positional) == 1:  # the server form: tcp:PORT:interface=HOST
            host, port = options.get("interface", ""), port_of(positional[0])
        elif len(positional) == 2:  # the client form: tcp:HOST:PORT
            host, port = positional[0], port_of(positional[1])
        else:
            raise _Fail(EX_USAGE, f"--admin {text}: no port; {_ADMIN_FORMS}")
        return _Admin("https" if kind == "ssl" else "http", loopback(host, v6), port)
    if kind == "systemd":
        raise _Fail(
            EX_USAGE,
            f"--admin {text}: a systemd: endpoint is a socket systemd hands to the gateway; give that socket's "
            "address instead (unix:/run/..., or tcp:PORT:interface=...)",
        )
    if text.isdigit():
        return _Admin("http", "127.0.0.1", port_of(text))
    host, sep, port = text.rpartition(":")
    if sep and host and "/" not in text and "=" not in text and (host.count(":") == 0 or host.startswith("[")):
        return _Admin("http", host.strip("[]"), port_of(port))
    raise _Fail(EX_USAGE, f"--admin {text}: {_ADMIN_FORMS}")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except FileNotFoundError:
            raise _Fail(EX_NOINPUT, f"--token-file {args.token_file}: no such file")
        except (OSError, UnicodeDecodeError) as e:
            raise _Fail(EX_NOINPUT, f"--token-file {args.token_file}: cannot read it: {getattr(e, 'strerror', None) or e}")
        if not token:
            raise _Fail(EX_NOINPUT, f"--token-file {args.token_file}: the file is empty")
        source = f"the token in {args.token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
        source = f"the token in ${TOKEN_ENV}"
    if any(c in token for c in "\r\n\0"):
        raise _Fail(EX_DATAERR, f"{source} has a line break in it: it must be one line")
    try:
        token.encode("latin-1")
    except UnicodeEncodeError:
        raise _Fail(EX_DATAERR, f"{source} has characters an HTTP header cannot carry")
    return token


def _admin_call(args: argparse.Namespace, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
    """
    One request to the admin endpoint; the status and the JSON answer.
    Failures to reach it, 401/403, 404 and 5xx become L{_Fail}; other statuses
    not in C{ok} are returned with their JSON (or None).
    """
    import http.client
    import json
    import socket
    import ssl

    admin = parse_admin(args.admin)
    token = _token(args)
    headers = {"Accept": "application/json", "User-Agent": f"twisted-mcp/{__version__}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is None and method == "POST":
        body = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    where = f"the admin endpoint at {admin}"
    conn = admin.connection(args.timeout)
    try:
        conn.request(method, admin.prefix + path, body=data, headers=headers)
        response = conn.getresponse()
        status = response.status
        content_type = response.getheader("content-type", "")
        raw = response.read(64 * 1024 * 1024)
    except FileNotFoundError:
        raise _Fail(EX_UNAVAILABLE, f"cannot reach {where}: no such socket (is the gateway running with --admin?)")
    except ConnectionRefusedError:
        raise _Fail(EX_UNAVAILABLE, f"cannot reach {where}: connection refused (is the gateway running with --admin?)")
    except PermissionError:
        raise _Fail(EX_NOPERM, f"cannot reach {where}: permission denied (run as a user that may use the socket)")
    except socket.timeout:
        raise _Fail(EX_UNAVAILABLE, f"cannot reach {where}: no answer within {args.timeout:g} seconds")
    except ssl.SSLError as e:
        raise _Fail(EX_UNAVAILABLE, f"cannot reach {where}: TLS failed: {e.reason or e}")
    except (OSError, http.client.HTTPException) as e:
        raise _Fail(EX_UNAVAILABLE, f"cannot reach {where}: {getattr(e, 'strerror', None) or e}")
    finally:
        conn.close()
    text = raw.decode("utf-8", "replace")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]
    try:
        answer = json.loads(text) if text.strip() else None
    except ValueError:
        answer = None
    if status in (401, 403):
        if token is None:
            hint = f"it wants a token: set ${TOKEN_ENV} or use --token-file (the value of gateway.adminToken)"
        else:
            hint = "the token was not accepted (compare it with gateway.adminToken)"
        raise _Fail(EX_NOPERM, f"{where} refused the request ({status}): {hint}")
    if status == 404 and not _has_reason(answer):
        # A 404 with the gateway's own reason (an unknown name) is a refusal; a bare one, a missing path.
        raise _Fail(
            EX_UNAVAILABLE,
            f"{where} has no {path} (404): the gateway is older than this command, or this is not its admin endpoint",
        )
    if status >= 500:
        said = _refusal(answer, status) if _has_reason(answer) else first
        raise _Fail(EX_UNAVAILABLE, f"{where} answered {status}" + (f": {said}" if said else ""))
    if status in ok and answer is None:
        kind = content_type.split(";")[0] or "no content type"
        what = "an empty body" if not text.strip() else f"something that is not JSON ({kind})"
        raise _Fail(EX_PROTOCOL, f"{where} answered {path} with {what}: the gateway may be older than this command")
    return status, answer


def _admin_command(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except _Fail as e:
            sys.stderr.write(f"twisted-mcp {args.command}: {e.message}\n")
            return e.code

    run.__doc__ = func.__doc__
    return run


def _has_reason(answer: Any) -> bool:
    return isinstance(answer, dict) and any(answer.get(k) for k in ("problems", "error", "message", "reason"))


def _refusal(answer: Any, status: int) -> str:
    """What the gateway said when it refused a request."""
    if isinstance(answer, dict):
        for key in ("problems", "error", "message", "reason"):
            value = answer.get(key)
            if isinstance(value, list):
                return "\n".join(f"  - {v}" for v in value)
            if value:
                return str(value)
    return f"status {status}"


def _duration(seconds: Any) -> str:
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return "?"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]


def _names(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "-"


def _healthy(backend: dict[str, Any]) -> bool:
    """Up; or per-session, its tools discovered (its shared instance then stops: each session starts its own)."""
    state = backend.get("state")
    return state == "up" or (bool(backend.get("perSession")) and state == "stopped")


@_admin_command
def status(args: argparse.Namespace) -> int:
    """Show what a running gateway is doing."""
    import json

    _, answer = _admin_call(args, "GET", "/status")
    if not isinstance(answer, dict) or not isinstance(answer.get("backends", []), list):
        raise _Fail(EX_PROTOCOL, "the admin endpoint's /status is not the JSON this command expects")
    backends = [b for b in answer.get("backends") or [] if isinstance(b, dict)]
    not_up = [b for b in backends if not _healthy(b)]
    ready = answer.get("ready")
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=False))
    else:
        out = [
            f"twisted-mcp {answer.get('version', '?')} at {parse_admin(args.admin)}: "
            f"{'ready' if ready else 'starting (discovery has not finished)'}, "
            f"up {_duration(answer.get('uptime'))}",
            "",
            f"Backends ({len(backends)}):",
        ]
        rows = []
        for b in backends:
            extra = []
            if b.get("restarts"):
                extra.append(f"{b['restarts']} restart(s)")
            if b.get("breaker") not in (None, "closed"):
                extra.append(f"breaker {b['breaker']}")
            if b.get("required"):
                extra.append("required")
            if b.get("perSession"):
                extra.append(f"per session, {b.get('instances', 0)} instance(s)")
            if b.get("lastError") and b.get("state") != "up":
                extra.append(f"last error: {b['lastError']}")
            rows.append([str(b.get("name", "?")), str(b.get("state", "?")), f"{len(b.get('tools') or [])} tool(s)", "; ".join(extra)])
        out += _table(rows) if rows else ["  (none)"]
        tools = [f"{t}" for b in backends for t in (b.get("tools") or [])]
        out += ["", f"Tools ({len(tools)}):"] + ([f"  {t}" for t in sorted(tools)] or ["  (none)"])
        clients = [c for c in answer.get("clients") or [] if isinstance(c, dict)]
        out += ["", f"Clients ({len(clients)}):"]
        crow = [
            [
                str(c.get("id", "?")),
                str(c.get("principal") or "(local)"),
                str(c.get("client") or "?"),
                str(c.get("protocol") or "-"),
                f"{c.get('inFlight', 0)} in flight",
            ]
            for c in clients
        ]
        out += _table(crow) if crow else ["  (none)"]
        ks = answer.get("killSwitch") or {}
        out += [
            "",
            "Kill switch: "
            + f"principals: {_names(ks.get('principals'))}; backends: {_names(ks.get('backends'))}; "
            + f"tools: {_names(ks.get('tools'))}",
        ]
        quarantined = [q for q in answer.get("quarantined") or [] if isinstance(q, dict)]
        out += [f"Quarantined ({len(quarantined)}):" if quarantined else "Quarantined: none"]
        out += [f"  {q.get('tool', '?')}: {q.get('reason', '')}".rstrip(": ") for q in quarantined]
        if quarantined:
            out.append("  (approve with: twisted-mcp approve --admin ADDR --tool NAME, or --all)")
        print("\n".join(out))
    if not_up:
        states = ", ".join(f"{b.get('name', '?')} ({b.get('state', '?')})" for b in not_up)
        sys.stderr.write(f"warning: {len(not_up)} of {len(backends)} backend(s) are not up: {states}\n")
    elif not ready:
        sys.stderr.write("warning: the gateway is still starting: discovery has not finished\n")
    if args.strict and (not_up or not ready):
        return EX_TEMPFAIL
    return EX_OK


def _process_command(pid: int) -> str | None:
    """The command line of process C{pid}, or None when it cannot be read."""
    import subprocess

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        pass
    try:
        done = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _reload_pidfile(args: argparse.Namespace) -> int:
    import signal

    try:
        with open(args.pidfile, encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise _Fail(EX_NOINPUT, f"--pidfile {args.pidfile}: no such file (is the gateway running as a daemon?)")
    except (OSError, UnicodeDecodeError) as e:
        raise _Fail(EX_NOINPUT, f"--pidfile {args.pidfile}: cannot read it: {getattr(e, 'strerror', None) or e}")
    if not text.isdigit() or int(text) <= 1:
        raise _Fail(EX_DATAERR, f"--pidfile {args.pidfile}: does not hold a process id")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise _Fail(EX_UNAVAILABLE, f"no process {pid} (from {args.pidfile}): the gateway is not running; the pid file is stale")
    except PermissionError:
        raise _Fail(EX_NOPERM, f"not allowed to signal process {pid}: run this as the gateway's user")
    command = _process_command(pid)
    if command is None:
        raise _Fail(EX_UNAVAILABLE, f"cannot tell what process {pid} is, so it was not signalled")
    if not any(word in command for word in ("twistd", "twist ", "mcp-gateway", "twisted_mcp")):
        raise _Fail(
            EX_UNAVAILABLE,
            f"process {pid} (from {args.pidfile}) is not a twisted-mcp gateway ({command.split(' ')[0]}); "
            "it was not signalled: the pid file may be stale",
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        raise _Fail(EX_NOPERM, f"not allowed to signal process {pid}: run this as the gateway's user")
    except ProcessLookupError:
        raise _Fail(EX_UNAVAILABLE, f"process {pid} exited before it could be signalled")
    print(
        f"sent SIGHUP to the gateway (pid {pid}): it re-reads its configuration; what changed, or why it "
        "was rejected, is in the gateway's log"
    )
    return EX_OK


@_admin_command
def reload(args: argparse.Namespace) -> int:
    """Make a running gateway re-read its configuration."""
    if args.pidfile:
        return _reload_pidfile(args)
    status_code, answer = _admin_call(args, "POST", "/reload", ok=(200,))
    if status_code == 200 and isinstance(answer, dict) and answer.get("applied") is True:
        changes = answer.get("changes") or []
        if changes:
            print(f"reloaded: {len(changes)} change(s) applied")
            for c in changes:
                print(f"  - {c}")
        else:
            print("reloaded: the configuration has not changed")
        return EX_OK
    if status_code in (200, 400, 422) and isinstance(answer, dict):
        problems = answer.get("problems")
        if isinstance(problems, list):
            problems = "\n".join(f"  - {p}" for p in problems)
        sys.stderr.write(
            "twisted-mcp reload: the gateway rejected the new configuration and keeps running the old one:\n"
            f"{problems or _refusal(answer, status_code)}\n"
        )
        return EX_CONFIG
    raise _Fail(EX_PROTOCOL, f"unexpected answer to /reload (status {status_code})")


@_admin_command
def kill(args: argparse.Namespace) -> int:
    """Set or lift the kill switch for a principal, a backend or a tool."""
    kind, name = next((k, getattr(args, k)) for k in ("principal", "backend", "tool") if getattr(args, k))
    body = {"kind": kind, "name": name, "disabled": not args.off}
    status_code, answer = _admin_call(args, "POST", "/kill", body=body)
    if status_code != 200:
        sys.stderr.write(f"twisted-mcp kill: the gateway refused: {_refusal(answer, status_code)}\n")
        return EX_DATAERR
    if not isinstance(answer, dict):
        raise _Fail(EX_PROTOCOL, "unexpected answer to /kill (not a JSON object)")
    if args.off:
        print(f"{kind} {name}: enabled again")
    else:
        what = {"principal": "its requests", "backend": "calls to its tools", "tool": "calls to it"}[kind]
        print(f"{kind} {name}: disabled ({what} are refused; calls in flight finish)")
    print(
        f"kill switch now: principals: {_names(answer.get('principals'))}; backends: "
        f"{_names(answer.get('backends'))}; tools: {_names(answer.get('tools'))}"
    )
    return EX_OK


@_admin_command
def approve(args: argparse.Namespace) -> int:
    """Approve quarantined tools (pinning) on a running gateway."""
    body: dict[str, Any] = {"all": True} if args.all else {"tools": args.tool}
    status_code, answer = _admin_call(args, "POST", "/pins/approve", body=body)
    if status_code != 200:
        sys.stderr.write(f"twisted-mcp approve: the gateway refused: {_refusal(answer, status_code)}\n")
        return EX_DATAERR
    approved = answer.get("approved") if isinstance(answer, dict) else None
    if not isinstance(approved, list):
        raise _Fail(EX_PROTOCOL, "unexpected answer to /pins/approve (no \"approved\" list)")
    if not approved:
        print("nothing approved: no such tool is quarantined")
    else:
        print(f"approved {len(approved)} tool(s) (their definitions are now in the lock file):")
        for t in approved:
            print(f"  {t}")
    left = answer.get("quarantined")
    if isinstance(left, list) and left:
        print(f"still quarantined: {', '.join(str(t) for t in left)}")
    return EX_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # sysexits: bad usage is 64, not argparse's 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EX_USAGE)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="twisted-mcp",
        description="Operations for the twisted-mcp gateway (the gateway itself runs as `twistd mcp-gateway`).",
    )
    parser.add_argument("--version", action="version", version=f"twisted-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "pin",
        help="approve the current tool definitions (write the lock file)",
        description="Start every configured MCP server, list its tools, and record a digest of each "
        "tool's full definition in the lock file (pinning.lockFile, default tools.lock.json beside the "
        "config). With pinning set to enforce, a tool that is new or differs from the lock is "
        "quarantined until you run this again.",
    )
    p.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    p.set_defaults(func=pin)
    a = sub.add_parser("audit", help="audit trail operations")
    a.set_defaults(func=lambda args: (a.print_help(sys.stderr), EX_USAGE)[1])
    asub = a.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    v = asub.add_parser(
        "verify",
        help="check the audit trail's hash chain",
        description="Read every record of the configured audit sink and check each record's digest "
        "and its link to the one before. Reports the first broken or missing link; exit code 65 "
        "when the chain is broken.",
    )
    v.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    v.add_argument("--key-file", help="the chain's key, instead of the one the config names (audit.keyFile...)")
    v.add_argument(
        "--checkpoint", metavar="FILE", help="a checkpoint (from `audit checkpoint`): the trail must still hold its record"
    )
    v.set_defaults(func=audit_verify)
    c = asub.add_parser(
        "checkpoint",
        help="write a signed checkpoint of the audit trail's head",
        description="Verify the trail, then write (to stdout, or to a new file with -o) a checkpoint of its last "
        "record signed with the chain's key. Kept where the gateway's host cannot write, it lets "
        "`audit verify --checkpoint FILE` detect records cut from the end of the trail, or an emptied trail.",
    )
    c.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    c.add_argument("--key-file", help="the chain's key, instead of the one the config names (audit.keyFile...)")
    c.add_argument("--output", "-o", help="write the checkpoint to this new file")
    c.set_defaults(func=audit_checkpoint)
    i = asub.add_parser(
        "init-db",
        help="create the PostgreSQL audit tables (a privileged, one-time step)",
        description="Create (or migrate) the tables of the postgres audit sink, as a role that may create "
        "tables, and with --grant give the gateway's role INSERT and SELECT on them and nothing else, so "
        "the gateway can add to its trail but never change or erase it. The gateway itself never creates "
        "or alters them.",
    )
    i.add_argument("--config", "-c", required=True, help="the gateway's configuration file")
    i.add_argument("--dsn", help="connect as this (privileged) role instead of the config's audit.dsn")
    i.add_argument("--grant", metavar="ROLE", help="the gateway's role: grant it INSERT and SELECT only")
    i.add_argument("--print", dest="print_sql", action="store_true", help="print the SQL instead of running it")
    i.set_defaults(func=audit_init_db)
    k = sub.add_parser(
        "check-config",
        help="validate a configuration file without starting anything",
        description="Exit 0 when FILE is a valid gateway configuration (listing its servers), or 78 "
        "listing every problem with its key path.",
    )
    k.add_argument("file", metavar="FILE")
    k.set_defaults(func=check_config)
    c = sub.add_parser(
        "connect",
        help="bridge stdin/stdout to a running gateway's socket",
        description="Connect to a gateway started with --listen and relay MCP messages between it and "
        "this command's stdin/stdout: an MCP client can launch this light command instead of a whole "
        "gateway. ENDPOINT is a Twisted client endpoint, e.g. unix:path=/run/twisted-mcp/gw.sock or "
        "tcp:host=127.0.0.1:port=8765.",
    )
    c.add_argument("endpoint", metavar="ENDPOINT")
    c.set_defaults(func=connect)
    i = sub.add_parser(
        "import",
        help="turn an MCP client's configuration into a gateway configuration",
        description="Read the MCP servers of a Claude Desktop, Claude Code, Cursor or VS Code configuration "
        "and write them as a gateway configuration (YAML, an mcpServers mapping). What cannot be converted "
        "is named in a warning; values (tokens in env and headers) are copied into the output, never "
        "printed. Variables the client would fill in (VS Code's ${input:ID}) become environment variables "
        "the gateway reads, listed at the end.",
    )
    i.add_argument(
        "source",
        metavar="SOURCE",
        help="the client's file: claude_desktop_config.json, ~/.claude.json, .mcp.json, ~/.cursor/mcp.json, "
        ".cursor/mcp.json, .vscode/mcp.json, or a VS Code settings.json",
    )
    i.add_argument(
        "--from",
        dest="from_",
        choices=("auto", "claude-desktop", "claude-code", "cursor", "vscode"),
        default="auto",
        help="the client the file belongs to (default: auto, from the file's name and contents)",
    )
    i.add_argument(
        "--project",
        metavar="PATH",
        help="Claude Code's ~/.claude.json: add this project's servers to the user-scope ones; VS Code and "
        "Cursor: the workspace folder that ${workspaceFolder} stands for (default: the directory holding "
        ".vscode or .cursor)",
    )
    i.add_argument("-o", "--output", metavar="OUT", help="write the configuration here, mode 0600 (default: standard output)")
    i.add_argument("--force", action="store_true", help="replace OUT if it exists")
    i.set_defaults(func=import_)

    def admin_options(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument(
            "--admin",
            metavar="ADDR",
            required=required,
            help="the gateway's admin endpoint: http://127.0.0.1:9100, or the endpoint given to its --admin "
            "(tcp:9100:interface=127.0.0.1, unix:/run/twisted-mcp/admin.sock)",
        )
        p.add_argument(
            "--token-file",
            metavar="PATH",
            help=f"a file holding the admin token (gateway.adminToken); default: the environment variable {TOKEN_ENV}",
        )
        p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="how long to wait for an answer (default 10)")

    st = sub.add_parser(
        "status",
        help="show what a running gateway is doing",
        description="Ask a running gateway's admin endpoint for its state: backends (state, tools, restarts, "
        "breaker), tools, clients, kill switch, quarantined tools. Exit 0 when it answered (a warning on "
        "stderr says which backends are not up), 69 when it cannot be reached or answers 5xx, 77 when it "
        "wants a (different) token.",
    )
    admin_options(st)
    st.add_argument("--json", action="store_true", help="print the gateway's JSON answer as it is")
    st.add_argument("--strict", action="store_true", help="exit 75 unless the gateway is ready and every backend is up")
    st.set_defaults(func=status)

    r = sub.add_parser(
        "reload",
        help="make a running gateway re-read its configuration",
        description="With --admin: ask the gateway to re-read its configuration and print what changed "
        "(exit 0) or why the new configuration was rejected (exit 78; the running one stays). With "
        "--pidfile: send SIGHUP to the gateway whose process id is in the file (as systemctl reload does); "
        "the outcome is in the gateway's log.",
    )
    how = r.add_mutually_exclusive_group(required=True)
    how.add_argument("--admin", metavar="ADDR", help="the gateway's admin endpoint (see `status`)")
    how.add_argument("--pidfile", metavar="PATH", help="the gateway's pid file (twistd --pidfile)")
    r.add_argument("--token-file", metavar="PATH", help=f"the admin token's file (default: ${TOKEN_ENV}); with --admin")
    r.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="how long to wait for an answer (default 30)")
    r.set_defaults(func=reload)

    kl = sub.add_parser(
        "kill",
        help="disable (or, with --off, enable again) a principal, a backend or a tool on a running gateway",
        description="Set the kill switch of a running gateway: new calls by the principal, to the backend's "
        "tools or to the tool are refused, calls in flight finish. --off lifts it.",
    )
    admin_options(kl)
    what = kl.add_mutually_exclusive_group(required=True)
    what.add_argument("--principal", metavar="NAME")
    what.add_argument("--backend", metavar="NAME")
    what.add_argument("--tool", metavar="NAME", help="an exposed tool name (server__tool)")
    kl.add_argument("--off", action="store_true", help="enable it again")
    kl.set_defaults(func=kill)

    ap = sub.add_parser(
        "approve",
        help="approve quarantined tools on a running gateway (pinning)",
        description="Approve tools that pinning quarantined (new, or changed since pinned): their current "
        "definitions are recorded in the lock file and they can be called.",
    )
    admin_options(ap)
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--tool", metavar="NAME", action="append", help="an exposed tool name; repeat for more")
    which.add_argument("--all", action="store_true", help="every quarantined tool")
    ap.set_defaults(func=approve)

    args = parser.parse_args(argv)
    if getattr(args, "pidfile", None) and args.token_file:
        parser.error("reload: --token-file goes with --admin, not --pidfile")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
