"""The subcommands that work on the config file and the audit trail directly: check-config, pin, audit verify, audit checkpoint, audit init-db."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted_mcp.cli._common import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    _load,
    _log_to_stderr,
    with_backends,
)


def pin(args: argparse.Namespace) -> int:
    """Start every backend, wait for discovery, write the lock file, stop."""
    from twisted_mcp.policy.pinning import pinned_definitions, read_lock, write_lock
    from twisted_mcp.policy.pipeline import Policy
    from twisted_mcp.policy.rules import PolicyConfig

    config = _load(args.config)
    lock = config.policy.lock_file or os.path.join(os.path.dirname(os.path.abspath(args.config)), "tools.lock.json")
    _log_to_stderr("warn")
    outcome: dict[str, Any] = {}

    def write(gateway: Any) -> None:
        catalog = gateway.catalog
        outcome["down"] = sorted(b.name for b in gateway.backends.values() if b.state.value != "up")
        entries = [(name, e.backend.name, e.tool, *pinned_definitions(e)) for name, e in catalog.entries.items()]
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

    # Pinning itself must not review (and warn about) what it is approving.
    if not with_backends(config, lambda reactor: Policy(PolicyConfig(), config.gateway.separator, reactor), write):
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
    for warning in rename_warnings(config):
        print(f"warning: {warning}")
    return EX_OK


def rename_warnings(config: Any) -> list[str]:
    """
    The roles' C{allow} and C{deny} patterns that name a renamed tool by its
    old shaped name (and not by its new one): such an allow no longer lets
    the tool through, and such a deny reads as if it did not apply.
    """
    from twisted_mcp.mcp.names import name_prefix, prefixed_name
    from twisted_mcp.policy.rules import matches

    separator = config.gateway.separator
    roles = config.policy.roles if config.policy is not None else {}
    out = []
    for server in config.servers:
        shaping = getattr(server, "tools", None)
        if shaping is None:
            continue
        prefix = name_prefix(server.name, server.prefix, separator)
        for own, new in sorted(shaping.rename.items()):
            old, now = prefixed_name(prefix, own), prefixed_name(prefix, new)
            for role_name, role in sorted(roles.items()):
                for key in ("allow", "deny"):
                    for i, pattern in enumerate(getattr(role, key)):
                        if matches(pattern, old, separator) and not matches(pattern, now, separator):
                            out.append(
                                f"roles.{role_name}.{key}[{i}]: {pattern!r} names {old}, which "
                                f"mcpServers.{server.name}.tools.rename serves as {now}"
                            )
    return out


def _audit_config(args: argparse.Namespace) -> Any:
    """The config's audit section, with the key of --key-file if given; exits when there is no trail."""
    import attrs

    from twisted_mcp.policy.audit.keys import load_key

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
    from twisted_mcp.policy.audit.verification import verify

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

    from twisted_mcp.policy.audit.keys import make_checkpoint

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
    sys.stderr.write(
        f"checkpoint of seq {seq}: keep it where this host cannot write, and check it with "
        "`twisted-mcp audit verify --checkpoint FILE`\n"
    )
    return EX_OK


def audit_init_db(args: argparse.Namespace) -> int:
    """Create the PostgreSQL audit tables and grant the gateway's role INSERT and SELECT only."""
    from twisted_mcp.policy.audit.config import _safe_dsn
    from twisted_mcp.policy.audit.sinks import init_postgres, postgres_setup_sql

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
