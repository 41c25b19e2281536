"""The subcommands that talk to a running gateway's admin endpoint: status, reload, kill, approve."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted_mcp import __version__
from twisted_mcp.cli._common import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_NOPERM,
    EX_OK,
    EX_PROTOCOL,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    TOKEN_ENV,
)


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
    from twisted_mcp.urls import split_url

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
        parts = split_url(text)
        if parts is None:
            raise _Fail(EX_USAGE, f"--admin {text}: not a valid address (host or port); {_ADMIN_FORMS}")
        if not parts.hostname:
            raise _Fail(EX_USAGE, f"--admin {text}: no host; {_ADMIN_FORMS}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
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
    if status >= 500 and status not in ok:
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


def _profile_lines(profiles: Any) -> list[str]:
    """The profiles of C{/status}, one line each: what each selects, where it is served."""
    if not isinstance(profiles, list):
        return []
    out = ["", f"Profiles ({len(profiles)}):"]
    for p in profiles:
        if not isinstance(p, dict):
            continue
        n = p.get("selected") if isinstance(p.get("selected"), dict) else {}
        counts = (
            f"{n.get('tools', '?')} tool(s), {n.get('prompts', '?')} prompt(s), "
            f"{n.get('resources', '?')} resource(s), {n.get('resourceTemplates', '?')} template(s)"
        )
        served = [str(h.get("path")) for h in p.get("http") or [] if isinstance(h, dict)]
        served += [str(listener) for listener in p.get("listeners") or [] if "http:" not in str(listener)]  # sockets
        out.append(f"  {p.get('name', '?')}: {counts}; served at {', '.join(dict.fromkeys(served)) or '-'}")
    return out


def _budget_lines(budgets: Any) -> list[str]:
    """The client budget table of C{/status}, as applied: one line per row."""
    if not isinstance(budgets, dict):
        return []
    used = "matched on clientInfo.name" if budgets.get("useClientInfo") else "clientInfo ignored: only the default and profiles apply"
    out = ["", f"Client budgets ({used}; server key length {budgets.get('serverKeyLength', '?')}):"]
    rows = [r for r in budgets.get("rows") or [] if isinstance(r, dict)]
    default = budgets.get("default")
    for r in [*rows, *([default] if isinstance(default, dict) else [])]:
        keys = [f"{k} {r[k]}" for k in ("maxTools", "maxNameLength", "nameOverhead", "search") if k in r]
        if r.get("countsServerKey"):
            keys.append("+ server key")
        where = r.get("source") if r.get("table") == "config" else f"built-in, {r.get('client', '?')}"
        out.append(f"  {r.get('name', 'default') if r is not default else 'default'} ({where}): {', '.join(keys) or '-'}")
    return out


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
            shaping = b.get("shaping")
            if isinstance(shaping, dict) and isinstance(shaping.get("tools"), dict):
                tools = shaping["tools"]
                extra.append(f"shaped: {tools.get('kept')} of {tools.get('listed')} tool(s) kept")
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
        out += _profile_lines(answer.get("profiles")) + _budget_lines(answer.get("clientBudgets"))
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
    _not_shared("kill", answer)
    return EX_OK


def _not_shared(command: str, answer: Any) -> None:
    """Say on stderr when a gateway with a shared state (state:) applied a change on itself only (Redis unreachable)."""
    if isinstance(answer, dict) and answer.get("shared") is False:
        why = answer.get("why") or "the gateway did not say why"
        sys.stderr.write(f"twisted-mcp {command}: applied on this gateway only, not yet on the other replicas: {why}\n")


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
    _not_shared("approve", answer)
    return EX_OK


#: The query parameters of the admin endpoint's C{GET /tools}, by option.
TOOLS_PARAMETERS = ("principal", "roles", "client", "profile", "search", "limit")


def tools_path(args: argparse.Namespace) -> str:
    """The C{GET /tools} path (with its query) for C{twisted-mcp tools}' options."""
    from urllib.parse import urlencode

    given = [(key, str(getattr(args, key))) for key in TOOLS_PARAMETERS if getattr(args, key) is not None]
    if args.explain:
        given.append(("explain", "1"))
    return "/tools" + (f"?{urlencode(given)}" if given else "")


def tools_from_admin(args: argparse.Namespace, show: Any, warn: Any) -> int:
    """
    C{twisted-mcp tools --admin}: the running gateway's report (C{GET
    /tools}), shown with C{show(report, as_json)}; C{warn(report)} names
    the backends that are not up.
    """
    try:
        status_code, answer = _admin_call(args, "GET", tools_path(args), ok=(200, 400))
        if status_code == 400:
            sys.stderr.write(f"twisted-mcp tools: the gateway refused: {_refusal(answer, status_code)}\n")
            return EX_USAGE
        if not isinstance(answer, dict) or not isinstance(answer.get("surface"), list):
            raise _Fail(EX_PROTOCOL, "the admin endpoint's /tools is not the JSON this command expects")
    except _Fail as e:
        sys.stderr.write(f"twisted-mcp tools: {e.message}\n")
        return e.code
    show(answer, args.json)
    warn(answer)
    return EX_OK
