"""
C{twisted-mcp revoke}: refuse a bearer token on a running gateway (its
admin endpoint's C{POST /revoke}).

The token is read from a file or from standard input, never from the
command line (where C{ps} would show it), and is sent to the gateway only:
the gateway keeps, logs and answers its id (the JWT's C{jti}, or
C{sha256:} and the token's digest), never the token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted_mcp.cli._common import EX_DATAERR, EX_NOINPUT, EX_OK, EX_PROTOCOL, EX_TEMPFAIL
from twisted_mcp.cli.admin_client import _admin_call, _admin_command, _Fail, _refusal

DESCRIPTION = (
    "Revoke a bearer token (identity.jwt) on a running gateway: every request that presents it is refused "
    'from now on with AUTHENTICATION_FAILED ("the token was revoked"). With a shared state (state: in the '
    "config, Redis) every replica refuses it within a second, and the revocation lasts as long as Redis keeps "
    "it; without one it applies to this gateway process only and is kept in memory: a restart forgets it "
    "(revoke it at its issuer too). Give the token in a file (--token-in) or on standard input "
    "(--token-in -), or its jti claim (--jti). Exit 0 when revoked and shared with every replica (or no "
    "shared state is configured), 75 when the gateway revoked it but could not share it yet (Redis "
    "unreachable: it is written when Redis answers again), 65 when the shared state refused it (e.g. its cap on "
    "revocations is reached: the other replicas do not refuse the token)."
)


def _read_token(source: str) -> str:
    if source == "-":
        text = sys.stdin.read(65536)
        where = "standard input"
    else:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read(65536)
        except FileNotFoundError:
            raise _Fail(EX_NOINPUT, f"--token-in {source}: no such file")
        except (OSError, UnicodeDecodeError) as e:
            raise _Fail(EX_NOINPUT, f"--token-in {source}: cannot read it: {getattr(e, 'strerror', None) or e}")
        where = source
    token = text.strip()
    if not token:
        raise _Fail(EX_NOINPUT, f"{where} holds no token")
    return token


@_admin_command
def revoke(args: argparse.Namespace) -> int:
    """Revoke a bearer token on a running gateway."""
    body: dict[str, Any] = {"jti": args.jti} if args.jti else {"token": _read_token(args.token_in)}
    status_code, answer = _admin_call(args, "POST", "/revoke", body=body)
    if status_code != 200:
        sys.stderr.write(f"twisted-mcp revoke: the gateway refused: {_refusal(answer, status_code)}\n")
        return EX_DATAERR
    ident = answer.get("revoked") if isinstance(answer, dict) else None
    if not isinstance(ident, str):
        raise _Fail(EX_PROTOCOL, 'unexpected answer to /revoke (no "revoked" id)')
    print(f"revoked: {ident}")
    if answer.get("shared") is True:
        print("every replica refuses it from now on")
        return EX_OK
    why = answer.get("why") or "the gateway did not say why"
    if answer.get("refused") is True:
        sys.stderr.write(
            "twisted-mcp revoke: this gateway refuses it, but the shared state refused to keep the revocation, so the "
            f"other replicas will not refuse it (and this one forgets it on a restart): {why}\n"
        )
        return EX_DATAERR
    sys.stderr.write(f"twisted-mcp revoke: this gateway refuses it, but not every replica may yet: {why}\n")
    return EX_OK if "no shared state is configured" in str(why) else EX_TEMPFAIL


def add_command(sub: Any, admin_options: Any) -> None:
    """Add C{revoke} to the C{twisted-mcp} subcommands."""
    rv = sub.add_parser(
        "revoke", help="revoke a bearer token on a running gateway (every replica with state:)", description=DESCRIPTION
    )
    admin_options(rv)
    which = rv.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--token-in",
        metavar="PATH",
        help="a file holding the bearer token to revoke, or - for standard input (never on the command line)",
    )
    which.add_argument("--jti", metavar="ID", help="the token's jti claim (or an id /revoke answered, sha256:...)")
    rv.set_defaults(func=revoke)


__all__ = ["DESCRIPTION", "add_command", "revoke"]
