"""
Which listeners and HTTP paths serve each profile, as C{/status} shows it
(design of issue 14, section 2.5).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted_mcp.frontends.http import HttpFrontend
from twisted_mcp.frontends.stream import SocketFrontend


def profiles_served(profiles: Mapping[str, Any], frontends: Iterable[Any]) -> list[dict[str, Any]]:
    """
    For each profile (by name), the C{--listen} values bound to it
    (C{listeners}) and the HTTP endpoints that serve it (C{http}: the
    listener and the path): C{<http.path>/<name>} on every HTTP listener
    bound to no profile, C{<http.path>} on one bound to it.
    """
    fronts = list(frontends)
    out = []
    for name in sorted(profiles):
        listeners: list[str] = []
        paths: list[dict[str, str]] = []
        for front in fronts:
            if isinstance(front, HttpFrontend):
                view, path = front.resource.view, front.resource.settings.path
                if view == name:
                    listeners.append(front.description)
                    paths.append({"listener": front.description, "path": path})
                elif view is None:
                    paths.append({"listener": front.description, "path": f"{path}/{name}"})
            elif isinstance(front, SocketFrontend) and front.factory.view == name:
                listeners.append(front.description)
        out.append({"name": name, "listeners": listeners, "http": paths})
    return out


__all__ = ["profiles_served"]
