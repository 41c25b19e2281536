"""
Tests for revoked bearer tokens: their ids (L{twisted_mcp.policy.identity.revocation}),
C{POST /revoke} (validation, answer, effect, with and without a shared
state), the authenticator refusing a revoked token (the stdio caller's and
an HTTP bearer token, remembered or not), and C{twisted-mcp revoke}.
The token itself is never in an answer or a log line.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jwt
import pytest
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from twisted_mcp.mcp import errors
from twisted_mcp.policy.identity import Authenticator, IdentityConfig, IdentityError, JwtConfig
from twisted_mcp.policy.identity.revocation import KEEP_UNKNOWN, revocation_id, revoke_request_id, revoked_ids
from twisted_mcp.policy.peers import ConnectionIdentity
from twisted_mcp.policy.pipeline import Policy
from twisted_mcp.policy.rules import parse_policy

from .test_admin import World
from .test_cli_admin import FakeGateway, gateway, run  # noqa: F401  (the fixture)
from .test_state_sync import PROBLEM, shared_world

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"
ENV = "MCP_TOKEN"
NOW = 1_800_000_000.0


def token(**claims: Any) -> str:
    payload = {"sub": "alice", "roles": ["dev"], "iat": NOW, "exp": NOW + 3600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class TestIds:
    def test_a_jwt_with_jti_is_revoked_by_its_jti(self) -> None:
        assert revocation_id(token(jti="a1b2")) == "a1b2"

    def test_a_jwt_without_jti_by_its_digest(self) -> None:
        t = token()
        assert revocation_id(t) == sha(t)

    def test_any_other_token_by_its_digest(self) -> None:
        assert revocation_id("opaque-token-123") == sha("opaque-token-123")

    @pytest.mark.parametrize("jti", [None, "", 5, ["x"]])
    def test_an_unusable_jti_is_ignored(self, jti: Any) -> None:
        t = jwt.encode({"sub": "a", "jti": jti}, SECRET, algorithm="HS256")
        assert revocation_id(t) == sha(t)


class TestRequestBody:
    @pytest.mark.parametrize(
        ("body", "says"),
        [
            ({}, 'expected {"token"'),
            ({"token": "a", "jti": "b"}, 'expected {"token"'),
            ({"token": ""}, '"token" must be a non-empty string'),
            ({"token": 5}, '"token" must be a non-empty string'),
            ({"token": None}, '"token" must be a non-empty string'),
            ({"token": "Bearer abc.def.ghi"}, 'without "Bearer "'),
            ({"token": "abc def"}, "characters a bearer token cannot hold"),
            ({"token": "abc\u00e9"}, "characters a bearer token cannot hold"),
            ({"token": "x" * 16385}, "longer than 16384"),
            ({"jti": ""}, '"jti" must be a non-empty string'),
            ({"jti": ["a"]}, '"jti" must be a non-empty string'),
            ({"jti": "x" * 257}, "longer than 256"),
            ({"jti": "a\nb"}, "control characters"),
            ({"token": "abc", "principal": "alice"}, "unknown key(s) 'principal'"),
        ],
    )
    def test_refused(self, body: dict[str, Any], says: str) -> None:
        ident, why = revoke_request_id(body)
        assert ident is None and why is not None and says in why


class TestAdminRevoke:
    @pytest.mark.parametrize("body", [{}, {"token": ""}, {"jti": 7}, {"token": "a b"}, {"other": 1}])
    def test_validation(self, body: Any) -> None:
        world = World()
        r = world.post(b"/revoke", body)
        assert r.code == 400
        assert r.json()["error"]
        assert revoked_ids(world.gateway.policy) == set()

    def test_not_json(self) -> None:
        world = World()
        assert world.post(b"/revoke", raw=b"token=abc").code == 400
        assert world.post(b"/revoke", ["abc"]).code == 400

    def test_a_token_is_revoked_by_its_id_and_never_echoed(self) -> None:
        world = World()
        t = token()
        with capturedLogs() as logs:
            r = world.post(b"/revoke", {"token": t})
        assert r.code == 200
        answer = r.json()
        assert answer["revoked"] == sha(t)
        assert answer["shared"] is False
        assert "applies on this replica only, kept in memory (a restart forgets it)" in answer["why"]
        assert revoked_ids(world.gateway.policy) == {sha(t)}
        said = " ".join(formatEvent(e) for e in logs)
        assert sha(t) in said
        for part in t.split("."):
            assert part not in r.body.decode() and part not in said
        assert world.get(b"/revoke").json() == {"revoked": [sha(t)]}

    def test_by_jti(self) -> None:
        world = World()
        r = world.post(b"/revoke", {"jti": "session-42"})
        assert r.json()["revoked"] == "session-42"
        again = world.post(b"/revoke", {"jti": "session-42"})
        assert again.code == 200
        assert revoked_ids(world.gateway.policy) == {"session-42"}

    def test_needs_a_token_on_tcp_as_kill_does(self) -> None:
        world = World()
        r = world.post(b"/revoke", {"jti": "x"}, unix=False)
        assert r.code == 403
        assert revoked_ids(world.gateway.policy) == set()

    def test_shared(self) -> None:
        world, state, sync = shared_world()
        r = world.post(b"/revoke", {"jti": "j-1"})
        assert r.json() == {"revoked": "j-1", "shared": True}
        # The flag holds when it may be forgotten: the token's exp is not known, so 30 days from now.
        assert state.flags.data["revoked"] == {"j-1": str(int(world.clock.seconds()) + KEEP_UNKNOWN)}

    def test_shared_a_jwt_is_kept_until_its_exp_and_at_least_30_days(self) -> None:
        world, state, sync = shared_world()
        world.clock.advance(NOW - world.clock.seconds())
        far = NOW + 90 * 24 * 3600
        long_lived, short_lived = token(jti="long", exp=far), token(jti="short")
        assert world.post(b"/revoke", {"token": long_lived}).json()["shared"] is True
        assert world.post(b"/revoke", {"token": short_lived}).json()["shared"] is True
        # The exp is read without checking the signature: it may make the revocation last longer, never shorter.
        assert state.flags.data["revoked"] == {"long": str(int(far)), "short": str(int(NOW) + KEEP_UNKNOWN)}

    def test_shared_refused_by_the_store_says_so(self) -> None:
        """The store refuses the revocation (its cap is reached): the answer says it is refused and why, not "later"."""
        world, state, sync = shared_world()
        cap = "the shared state holds 100000 revoked tokens, its cap: ids are forgotten once their token expires"
        state.flags.set = lambda kind, name, value: fail(RuntimeError(cap))  # type: ignore[method-assign]
        r = world.post(b"/revoke", {"jti": "j-1"})
        answer = r.json()
        assert answer["shared"] is False and answer["refused"] is True
        assert cap in answer["why"] and "cannot be reached" not in answer["why"]
        assert sync.pending == []  # not tried again forever
        assert "j-1" in revoked_ids(world.gateway.policy)

    def test_shared_store_down(self) -> None:
        world, state, sync = shared_world()
        state.go_down()
        r = world.post(b"/revoke", {"jti": "j-1"})
        assert r.json()["shared"] is False and PROBLEM in r.json()["why"]
        assert "j-1" in revoked_ids(world.gateway.policy)
        state.come_back()
        assert list(state.flags.data["revoked"]) == ["j-1"]


def identity() -> IdentityConfig:
    return IdentityConfig(jwt=JwtConfig(tokenEnv=ENV, algorithms=("HS256",), secret=SECRET))


class TestEffect:
    def test_a_revoked_stdio_token_is_refused(self) -> None:
        """The stdio caller's token, revoked at run time: its next call fails with AUTHENTICATION_FAILED."""
        t = token()
        world = World()
        world.clock.advance(NOW - world.clock.seconds())
        authenticator = Authenticator(identity(), {ENV: t}, world.clock, revoked=lambda: revoked_ids(world.gateway.policy))
        authenticator.start()
        rules = parse_policy({"roles": {"dev": {"allow": ["*"]}}}, None, [], {"alpha", "beta"})
        who = ConnectionIdentity(identity(), authenticator.authenticate)
        world.gateway.policy = Policy(rules, "__", world.clock, who.resolve)
        world.ready()
        session = world.session("s1")
        world.call(session, 1, "alpha__echo")
        assert len(world.alpha.calls) == 1
        world.alpha.calls[0].deferred.callback({"content": []})
        assert "result" in world.take("s1")[0]

        assert world.post(b"/revoke", {"token": t}).code == 200
        world.call(session, 2, "alpha__echo")
        (answer,) = world.take("s1")
        assert answer["error"]["code"] == errors.AUTHENTICATION_FAILED
        assert answer["error"]["message"] == "Authentication failed: the token was revoked"
        assert len(world.alpha.calls) == 1

    def test_a_revoked_bearer_token_is_refused_even_when_remembered(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        revoked: set[str] = set()
        auth = Authenticator(identity(), {}, clock, revoked=lambda: revoked)
        auth.start()
        t = token()
        assert auth.verify_bearer(t).name == "alice"  # verified, and remembered
        revoked.add(sha(t))
        with pytest.raises(IdentityError) as caught:
            auth.verify_bearer(t)
        assert (caught.value.message, caught.value.reason) == ("the token was revoked", "revoked")
        other = token(sub="bob")
        assert auth.verify_bearer(other).name == "bob"

    def test_a_bearer_token_revoked_by_its_jti(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        revoked = {"jti-7"}
        auth = Authenticator(identity(), {}, clock, revoked=lambda: revoked)
        auth.start()
        with pytest.raises(IdentityError, match="the token was revoked"):
            auth.verify_bearer(token(jti="jti-7"))
        assert auth.verify_bearer(token(jti="jti-8")).name == "alice"
        # The jti comes from the verified token: a forged one with a revoked jti is refused for its signature.
        forged = jwt.encode({"sub": "alice", "jti": "jti-9"}, "another-secret-another-secret-1234", algorithm="HS256")
        with pytest.raises(IdentityError, match="signature"):
            auth.verify_bearer(forged)

    def test_without_revocations_nothing_changes(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        auth = Authenticator(identity(), {}, clock)
        auth.start()
        assert auth.verify_bearer(token(jti="x")).name == "alice"


class TestCommand:
    def test_token_from_a_file(self, capsys: Any, gateway: FakeGateway, tmp_path: Any) -> None:
        t = token()
        path = tmp_path / "token"
        path.write_text(t + "\n")
        gateway.routes[("POST", "/revoke")] = (200, {"revoked": sha(t), "shared": True})
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--token-in", str(path))
        assert code == 0
        assert gateway.last.json() == {"token": t}
        assert out == f"revoked: {sha(t)}\nevery replica refuses it from now on\n"
        assert t not in out and t not in err

    def test_token_from_stdin(self, capsys: Any, gateway: FakeGateway, monkeypatch: Any) -> None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO("abc.def.ghi\n"))
        gateway.routes[("POST", "/revoke")] = (200, {"revoked": sha("abc.def.ghi"), "shared": True})
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--token-in", "-")
        assert code == 0 and gateway.last.json() == {"token": "abc.def.ghi"}

    def test_jti_not_shared_yet(self, capsys: Any, gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/revoke")] = (
            200,
            {"revoked": "j1", "shared": False, "why": "the shared state (Redis) cannot be reached (x)"},
        )
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--jti", "j1")
        assert code == 75
        assert gateway.last.json() == {"jti": "j1"}
        assert "not every replica may yet: the shared state (Redis) cannot be reached" in err

    def test_no_shared_state_is_fine(self, capsys: Any, gateway: FakeGateway) -> None:
        why = "no shared state is configured (state:): this applies on this replica only, kept in memory (a restart forgets it)"
        gateway.routes[("POST", "/revoke")] = (200, {"revoked": "j1", "shared": False, "why": why})
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--jti", "j1")
        assert code == 0 and "kept in memory" in err

    def test_refused_by_the_shared_state(self, capsys: Any, gateway: FakeGateway) -> None:
        why = "the shared state refused the change (its cap on revocations is reached): it applies on this replica only"
        gateway.routes[("POST", "/revoke")] = (200, {"revoked": "j1", "shared": False, "why": why, "refused": True})
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--jti", "j1")
        assert code == 65
        assert "refused to keep the revocation" in err and "cap on revocations" in err

    def test_refused(self, capsys: Any, gateway: FakeGateway) -> None:
        gateway.routes[("POST", "/revoke")] = (400, {"error": '"jti" is longer than 256 characters'})
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--jti", "x" * 300)
        assert code == 65 and "longer than 256" in err

    def test_an_empty_file(self, capsys: Any, gateway: FakeGateway, tmp_path: Any) -> None:
        path = tmp_path / "token"
        path.write_text("\n")
        code, out, err = run(capsys, "revoke", "--admin", gateway.address, "--token-in", str(path))
        assert code == 66 and "holds no token" in err
        assert gateway.requests == []

    def test_one_of_token_or_jti(self, capsys: Any, gateway: FakeGateway) -> None:
        with pytest.raises(SystemExit) as caught:
            run(capsys, "revoke", "--admin", gateway.address)
        assert caught.value.code == 64


def test_a_reload_keeps_revocations() -> None:
    """Revocations made on this replica (in memory) outlive a reload's new policy."""
    from twisted.internet.testing import MemoryReactor

    from twisted_mcp.service import GatewayService

    from .test_admin import config

    service = GatewayService(config(names=()), Clock(), MemoryReactor())
    revoked_ids(service.gateway.policy).add("j-1")
    applied, changes, problems = service.reload(lambda: config(names=()))
    assert applied, problems
    assert json.dumps(sorted(revoked_ids(service.gateway.policy))) == '["j-1"]'
