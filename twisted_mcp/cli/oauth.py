"""
C{twisted-mcp login}, C{logout} and C{tokens}: a principal's OAuth
authorizations toward remote servers, through a running gateway's admin
endpoint (C{docs/design/oauth.md} §10.2).

C{login} listens on a loopback port of this machine for the authorization
server's redirect, asks the gateway to begin an authorization whose
redirect URI is that port, prints the URL to open, waits for the browser to
come back, and hands the callback's query to the gateway, which checks it
(C{state}, C{iss}) and exchanges the code with the verifier it alone holds.
A forwarded link sends its victim's browser to the victim's own loopback,
where nothing of the forwarder's listens.  Nothing printed is a secret: the
URL is single use and useless without the gateway's verifier.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted_mcp.cli._common import EX_CONFIG, EX_NOPERM, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE
from twisted_mcp.cli.admin_client import _admin_call, _Fail, _table

#: Exit codes by the gateway's refusal C{reason}.
_EXIT_BY_REASON = {
    "backend": EX_CONFIG,
    "no-oauth": EX_CONFIG,
    "principal": EX_USAGE,
    "consent-refused": EX_NOPERM,
    "state-mismatch": EX_NOPERM,
    "iss-mismatch": EX_NOPERM,
    "token-request-failed": EX_NOPERM,
}


def _refused(status: int, answer: Any, what: str) -> _Fail:
    reason = answer.get("reason") if type(answer) is dict else None
    message = answer.get("error") if type(answer) is dict else None
    fallback = EX_UNAVAILABLE if status == 502 else EX_USAGE if status == 400 else EX_NOPERM
    code = _EXIT_BY_REASON.get(reason or "", fallback)
    return _Fail(code, f"{what}: {message or f'the gateway answered {status}'}" + (f" ({reason})" if reason else ""))


class _Callback:
    """A one-shot HTTP listener on a loopback port for the authorization server's redirect."""

    def __init__(self, port: int) -> None:
        import http.server

        received: list[dict[str, str]] = []
        self.received = received
        #: Called with the redirect's query before the page is answered: the page says how it ended.
        self.finish: Any = lambda params: "Authorization received: the gateway is finishing it. You can close this tab."

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                if parts.path != "/oauth/callback" or received:
                    self.send_error(404)
                    return
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                received.append(params)
                outcome = outer.finish(params)
                body = f"<!doctype html><meta charset='utf-8'><title>twisted-mcp</title><p>{html.escape(outcome)}</p>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query holds the code: never printed

        self.server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/callback"

    def wait(self, seconds: float) -> dict[str, str] | None:
        deadline = time.monotonic() + seconds
        while not self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.server.timeout = min(left, 1.0)
            self.server.handle_request()
        return self.received[0]

    def close(self) -> None:
        self.server.server_close()


def _expiry(expires_at: Any) -> str:
    if not isinstance(expires_at, (int, float)):
        return "no expiry given"
    left = expires_at - time.time()
    if left <= 0:
        return "expired"
    if left >= 3600:
        return f"expires in {left / 3600:.0f} h"
    if left >= 60:
        return f"expires in {left / 60:.0f} min"
    return f"expires in {left:.0f} s"


def login(args: argparse.Namespace) -> int:
    try:
        return _login(args)
    except _Fail as e:
        print(f"twisted-mcp login: {e.message}", file=sys.stderr)
        return e.code


def _login(args: argparse.Namespace) -> int:
    try:
        listener = _Callback(args.port)
    except OSError as e:
        raise _Fail(EX_UNAVAILABLE, f"cannot listen on 127.0.0.1:{args.port} for the redirect: {e.strerror or e}")
    try:
        body: dict[str, Any] = {"backend": args.backend, "redirectUri": listener.redirect_uri, "scopes": args.scope or []}
        if args.as_ is not None:
            body["principal"] = args.as_
        status, answer = _admin_call(args, "POST", "/oauth/begin", body, ok=(200, 400, 409, 502))
        if status != 200:
            raise _refused(status, answer, f"{args.backend}: cannot begin the authorization")
        url, principal = answer.get("url"), answer.get("principal")
        if type(url) is not str:
            raise _Fail(EX_UNAVAILABLE, "the gateway answered /oauth/begin without a URL")
        print(f"Open this URL in a browser on this machine to authorize {args.backend} for {principal}:\n\n  {url}\n", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)
        finished: list[Any] = []

        def finish(params: dict[str, str]) -> str:
            """Have the gateway check and finish it now, so that the browser's page says how it ended."""
            body = {"params": params, "redirectUri": listener.redirect_uri}
            try:
                finished.append(_admin_call(args, "POST", "/oauth/complete", body, ok=(200, 400, 409, 502)))
            except _Fail as e:
                finished.append(e)
                return "The gateway could not be reached to finish the authorization: see the terminal."
            status, answer = finished[0]
            if status == 200:
                return f"{args.backend} is now authorized for {answer.get('principal')}. You can close this tab."
            reason = answer.get("reason") if type(answer) is dict else status
            return f"The authorization failed ({reason}): see the terminal."

        listener.finish = finish
        minutes = args.wait / 60
        print(f"Waiting for the authorization (up to {minutes:g} min; Ctrl-C to give up)...", flush=True)
        try:
            params = listener.wait(args.wait)
        except KeyboardInterrupt:
            print("given up", file=sys.stderr)
            return EX_TEMPFAIL
        if params is None:
            raise _Fail(EX_TEMPFAIL, f"{args.backend}: no redirect came back within {args.wait:g} s; run the command again")
        if isinstance(finished[0], _Fail):
            raise finished[0]
        status, answer = finished[0]
        if status != 200:
            raise _refused(status, answer, f"{args.backend}: the authorization failed")
        scopes = " ".join(answer.get("scopes") or []) or "(none named)"
        refresh = "refreshable" if answer.get("refreshable") else "not refreshable: log in again when it expires"
        print(
            f"{answer.get('backend')}: authorized for {answer.get('principal')} (issuer {answer.get('issuer')}, "
            f"scopes: {scopes}; {_expiry(answer.get('expiresAt'))}, {refresh})"
        )
        return EX_OK
    finally:
        listener.close()


def logout(args: argparse.Namespace) -> int:
    try:
        body: dict[str, Any] = {"backend": args.backend, "revoke": args.revoke}
        if args.as_ is not None:
            body["principal"] = args.as_
        status, answer = _admin_call(args, "POST", "/oauth/logout", body, ok=(200, 400, 409, 502))
        if status != 200:
            raise _refused(status, answer, f"{args.backend}: logout failed")
        line = (
            f"{args.backend}: forgot {answer.get('principal')}'s tokens"
            if answer.get("removed")
            else (f"{args.backend}: {answer.get('principal')} had no tokens")
        )
        if args.revoke:
            revoked = answer.get("revoked")
            line += f" (revoked at the authorization server: {'yes' if revoked else 'no'}"
            if answer.get("revokeError"):
                line += f", {answer['revokeError']}"
            line += ")"
        print(line)
        return EX_OK
    except _Fail as e:
        print(f"twisted-mcp logout: {e.message}", file=sys.stderr)
        return e.code


def tokens(args: argparse.Namespace) -> int:
    import json

    try:
        body: dict[str, Any] = {}
        if args.as_ is not None:
            body["principal"] = args.as_
        if args.backend is not None:
            body["backend"] = args.backend
        status, answer = _admin_call(args, "POST", "/oauth/tokens", body, ok=(200, 400, 409, 502))
        if status != 200:
            raise _refused(status, answer, "tokens")
    except _Fail as e:
        print(f"twisted-mcp tokens: {e.message}", file=sys.stderr)
        return e.code
    rows = answer.get("tokens") if type(answer) is dict else None
    if type(rows) is not list:
        print("twisted-mcp tokens: the gateway's answer has no token list", file=sys.stderr)
        return EX_UNAVAILABLE
    if args.json:
        print(json.dumps(rows, indent=1, sort_keys=True))
        return EX_OK
    table = [["PRINCIPAL", "BACKEND", "ISSUER", "SCOPES", "EXPIRES", "REFRESH", "STATE"]]
    for row in rows:
        expires = row.get("expires_at")
        table.append(
            [
                str(row.get("principal", "")),
                str(row.get("backend", "")),
                str(row.get("issuer", "")),
                " ".join(row.get("scopes") or []) or "-",
                time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(expires)) if isinstance(expires, (int, float)) else "-",
                "yes" if row.get("refreshable") else "no",
                str(row.get("state", "ok")),
            ]
        )
    for line in _table(table):
        print(line)
    if len(rows) == 0:
        print("(no authorizations held)", file=sys.stderr)
    return EX_OK


def add_commands(sub: Any, admin_options: Any) -> None:
    """The three subcommands, on C{twisted-mcp}'s parser."""
    lg = sub.add_parser(
        "login",
        help="authorize a backend that uses OAuth (auth: oauth) for a principal",
        description="Ask a running gateway to begin an OAuth authorization toward BACKEND, print the URL to "
        "open in a browser on this machine, wait for the authorization server to redirect back to a "
        "listener on 127.0.0.1, and have the gateway finish it. The tokens stay in the gateway (encrypted "
        "at rest); nothing printed is a secret. Exit 0 when authorized, 77 when refused (at the "
        "authorization server, or a redirect that failed its checks), 75 when nothing came back in time, "
        "69 when the gateway or the authorization server cannot be reached, 78 when BACKEND does not use OAuth.",
    )
    lg.add_argument("backend", metavar="BACKEND")
    lg.add_argument(
        "--as",
        dest="as_",
        metavar="PRINCIPAL",
        help="whose authorization (NAME or SOURCE:NAME); needed when identities are configured",
    )
    lg.add_argument(
        "--scope", action="append", metavar="SCOPE", help="a scope to ask for beyond what the server names; repeat for more"
    )
    lg.add_argument("--open", action="store_true", help="open the URL in this machine's browser")
    lg.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="the loopback port to listen on (default: any free one); a fixed port lets every login reuse one dynamic registration",
    )
    lg.add_argument("--wait", type=float, default=600.0, metavar="SECONDS", help="how long to wait for the browser (default 600)")
    admin_options(lg)
    lg.set_defaults(func=login)

    lo = sub.add_parser(
        "logout",
        help="forget a principal's OAuth tokens for a backend",
        description="Delete the tokens the gateway holds for a principal and BACKEND; with --revoke, revoke "
        "them at the authorization server first (when it offers revocation). The next call needs a login.",
    )
    lo.add_argument("backend", metavar="BACKEND")
    lo.add_argument("--as", dest="as_", metavar="PRINCIPAL", help="whose tokens (NAME or SOURCE:NAME)")
    lo.add_argument("--revoke", action="store_true", help="revoke the tokens at the authorization server too")
    admin_options(lo)
    lo.set_defaults(func=logout)

    tk = sub.add_parser(
        "tokens",
        help="list the OAuth authorizations a gateway holds (never the tokens)",
        description="List, per principal and backend, the authorizations the gateway holds: issuer, scopes, "
        "expiry, whether they can be refreshed. Tokens, refresh tokens and secrets are never shown.",
    )
    tk.add_argument("--as", dest="as_", metavar="PRINCIPAL", help="only this principal's")
    tk.add_argument("--backend", metavar="NAME", help="only this backend's")
    tk.add_argument("--json", action="store_true", help="print the rows as JSON")
    admin_options(tk)
    tk.set_defaults(func=tokens)


__all__ = ["add_commands", "login", "logout", "tokens"]
