"""The import subcommand: a gateway config written from an MCP client's own config."""

from __future__ import annotations

import argparse
import os
import sys

from twisted_mcp.cli._common import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_USAGE,
)


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
    from twisted_mcp.cli import importer

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
