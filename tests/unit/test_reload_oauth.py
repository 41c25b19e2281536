"""
Reloading a configuration whose OAuth parts changed: a backend whose
C{auth} changed is restarted; the C{oauth:} section is applied at start only.
"""

from __future__ import annotations

from typing import Any

from .test_reload import World, server, world  # noqa: F401 (the fixture)

KEY = {"store": {"keyEnv": "OAUTH_KEY"}}


def config(auth: Any, oauth: Any = KEY) -> dict[str, Any]:
    return {"mcpServers": {"alpha": server("alpha", auth=auth), "beta": server("beta")}, "oauth": oauth}


def test_changed_auth_restarts_the_backend(world: World) -> None:  # noqa: F811
    world.service(config({"oauth": {"scopes": ["read"]}}))
    first = world.backends["alpha"]
    applied, changes, _ = world.reload(config({"oauth": {"scopes": ["read", "write"]}}))
    assert applied and changes == ["backend alpha: restarted (its configuration changed)"]
    assert world.stopped == [first]
    assert world.backends["alpha"] is not first
    assert world.backends["alpha"].config.auth.scopes == ("read", "write")


def test_unchanged_auth_keeps_the_backend(world: World) -> None:  # noqa: F811
    world.service(config("oauth"))
    first = world.backends["alpha"]
    applied, changes, _ = world.reload(config("oauth"))
    assert applied and changes == []
    assert world.backends["alpha"] is first and world.stopped == []


def test_oauth_section_needs_a_restart(world: World) -> None:  # noqa: F811
    world.service(config("oauth"))
    applied, changes, _ = world.reload(config("oauth", {**KEY, "requestTimeout": 3}))
    assert applied and changes == ["oauth: needs a restart"]


def test_the_url_of_an_oauth_server_cannot_change_on_reload(world: World) -> None:  # noqa: F811
    """Its old backend may still be finishing calls: tokens for one server must not be sent to another."""
    world.service(config("oauth"))
    first = world.backends["alpha"]
    moved = config("oauth")
    moved["mcpServers"]["alpha"]["url"] = "http://127.0.0.1:9/elsewhere"
    applied, _, problems = world.reload(moved)
    assert not applied
    assert "the URL of a server with auth cannot change on reload" in problems
    assert world.backends["alpha"] is first


def test_identities_added_by_reload_close_the_connect_page(world: World) -> None:  # noqa: F811
    """
    Without identities a connect link binds nobody else's account; once a
    reload adds them, one person could open another's link: the page and
    the consent inside calls are off from then on (browserCheck not set).
    """
    oauth = {**KEY, "publicUrl": "http://127.0.0.1:8080"}
    world.service(config("oauth", oauth))
    consent = world.svc.gateway.consent
    assert consent is not None and consent.connect
    with_identity = {**config("oauth", oauth), "identity": {"principal": {"name": "alice"}}}
    applied, _, problems = world.reload(with_identity)
    assert applied, problems
    assert world.svc.gateway.consent is consent and not consent.connect
