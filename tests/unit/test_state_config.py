"""
Tests for L{twisted_mcp.state.config}: the C{state:} section, every field,
the problems a bad one gives, and the URL's password kept out of
everything shown.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from twisted_mcp.config import ConfigError
from twisted_mcp.config.loader import build
from twisted_mcp.state import config as state_config
from twisted_mcp.state.config import StateSettings

SECRET = "s3cr3t-Pa55"
SERVERS = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}


def load(state: Any, environ: dict[str, str] | None = None) -> Any:
    return build({**SERVERS, "state": state}, "gateway.yaml", environ or {})


class StateSectionTests(SynchronousTestCase):
    def problems(self, state: Any, environ: dict[str, str] | None = None) -> list[str]:
        e = self.assertRaises(ConfigError, load, state, environ)
        self.assertNotIn(SECRET, str(e))
        return e.problems

    def assertProblem(self, problems: list[str], path: str, *words: str) -> None:
        for p in problems:
            if p.startswith(path + ": ") and all(w in p for w in words):
                return
        self.fail(f"no problem about {path!r} mentioning {words!r} in {problems!r}")

    def test_absent(self) -> None:
        """No C{state:} (or C{state: null}): everything stays in this process."""
        self.assertIsNone(build(SERVERS, "gateway.yaml", {}).state)
        self.assertIsNone(load(None).state)

    def test_defaults(self) -> None:
        """Only the URL: every other field has the contract's default; the replica is <hostname>-<pid>."""
        settings = load({"redis": "redis://127.0.0.1"}).state
        self.assertIsInstance(settings, StateSettings)
        self.assertEqual(settings.redis, "redis://127.0.0.1")
        self.assertEqual(settings.namespace, "twisted-mcp")
        self.assertEqual(settings.replica, f"{socket.gethostname()}-{os.getpid()}")
        self.assertEqual(
            (settings.timeout, settings.resyncInterval, settings.leaseSeconds, settings.breakers),
            (0.5, 1.0, 15.0, "local"),
        )
        self.assertEqual(dict(settings.onUnavailable), {"limits": "refuse", "killSwitch": "refuse", "sessions": "local"})
        self.assertEqual(settings.describe_url(), "redis://127.0.0.1:6379/0")

    def test_every_field(self) -> None:
        settings = load(
            {
                "redis": f"redis://:{SECRET}@redis.internal:6380/3",
                "namespace": "prod:gw",
                "replica": "${REPLICA}",
                "timeout": 0.25,
                "resyncInterval": 2,
                "leaseSeconds": 30,
                "breakers": "shared",
                "onUnavailable": {"limits": "local", "sessions": "refuse"},
            },
            {"REPLICA": "gw-7"},
        ).state
        self.assertEqual(settings.namespace, "prod:gw")
        self.assertEqual(settings.replica, "gw-7")
        self.assertEqual((settings.timeout, settings.resyncInterval, settings.leaseSeconds), (0.25, 2.0, 30.0))
        self.assertEqual(settings.breakers, "shared")
        self.assertEqual(dict(settings.onUnavailable), {"limits": "local", "killSwitch": "refuse", "sessions": "refuse"})
        address = settings.address()
        self.assertEqual((address.host, address.port, address.db, address.password), ("redis.internal", 6380, 3, SECRET))
        self.assertEqual(address.describe(), "redis.internal:6380")

    def test_password_never_shown(self) -> None:
        """The password is in neither describe_url(), nor repr(), nor the address's repr."""
        settings = load({"redis": f"redis://:{SECRET}@10.0.0.5:6379/0"}).state
        self.assertEqual(settings.describe_url(), "redis://10.0.0.5:6379/0")
        self.assertNotIn(SECRET, repr(settings))
        self.assertNotIn(SECRET, repr(settings.address()))
        self.assertNotIn(SECRET, settings.address().describe())

    def test_percent_encoded_password(self) -> None:
        settings = load({"redis": "redis://:p%40ss%3Aword@h/0"}).state
        self.assertEqual(settings.address().password, "p@ss:word")
        self.assertEqual(settings.describe_url(), "redis://h:6379/0")

    def test_unix_socket(self) -> None:
        settings = load({"redis": f"unix://:{SECRET}@/run/redis/redis.sock?db=2"}).state
        address = settings.address()
        self.assertEqual((address.path, address.db, address.password), ("/run/redis/redis.sock", 2, SECRET))
        self.assertEqual(settings.describe_url(), "unix:///run/redis/redis.sock?db=2")
        self.assertEqual(address.describe(), "unix:/run/redis/redis.sock")

    def test_ipv6(self) -> None:
        settings = load({"redis": "redis://[::1]:7000"}).state
        self.assertEqual(settings.address().host, "::1")
        self.assertEqual(settings.describe_url(), "redis://[::1]:7000/0")

    def test_redis_required(self) -> None:
        self.assertProblem(self.problems({"namespace": "x"}), "state", "redis is required")
        self.assertProblem(self.problems({}), "state", "redis is required")

    def test_not_a_mapping(self) -> None:
        self.assertProblem(self.problems("redis://h"), "state", "expected a mapping")

    def test_unknown_key(self) -> None:
        self.assertProblem(self.problems({"redis": "redis://h", "timout": 1}), "state", '"timout"', "timeout")

    def test_bad_urls(self) -> None:
        """Each bad URL is refused with what is expected, and never quoted (its password stays out)."""
        cases = {
            f"http://:{SECRET}@h/0": "neither redis:// nor unix://",
            f"rediss://:{SECRET}@h/0": "TLS",
            f"redis://:{SECRET}@h/zero": "database number",
            f"redis://:{SECRET}@h:99999/0": "cannot be read",
            f"redis://:{SECRET}@/0": "no host",
            f"redis://user:{SECRET}@h/0": "user name",
            f"redis://:{SECRET}@h/0?x=1": "no ?query",
            f"unix://:{SECRET}@host/sock": "three slashes",
            f"unix://:{SECRET}@/sock?db=x": "?db=",
            f"unix://:{SECRET}@/sock?timeout=1": "only ?db=N",
            f"redis://:{SECRET}@h/0#frag": "#fragment",
            f"redis://:{SECRET}@h/99999999": "database number",
        }
        for url, words in cases.items():
            self.assertProblem(self.problems({"redis": url}), "state.redis", words)
        self.assertProblem(self.problems({"redis": ""}), "state.redis", "empty string")
        self.assertProblem(self.problems({"redis": 6379}), "state.redis", "a number")

    def test_describe_url_unreadable(self) -> None:
        """A settings object built by hand with a bad URL shows no part of it."""
        settings = StateSettings(redis=f"http://:{SECRET}@h")
        self.assertNotIn(SECRET, settings.describe_url())
        e = self.assertRaises(ValueError, settings.address)
        self.assertNotIn(SECRET, str(e))

    def test_bad_namespace_and_replica(self) -> None:
        self.assertProblem(self.problems({"redis": "redis://h", "namespace": "has space"}), "state.namespace", "key prefix")
        self.assertProblem(self.problems({"redis": "redis://h", "namespace": "x" * 65}), "state.namespace", "1 to 64")
        self.assertProblem(self.problems({"redis": "redis://h", "namespace": ""}), "state.namespace", "non-empty")
        self.assertProblem(self.problems({"redis": "redis://h", "replica": "a:b"}), "state.replica", "this process's name")
        self.assertProblem(self.problems({"redis": "redis://h", "replica": 7}), "state.replica", "expected a string")

    def test_bad_numbers(self) -> None:
        for key, value, words in (
            ("timeout", 0, "from 0.01 to 60"),
            ("timeout", "fast", "expected a number"),
            ("timeout", True, "expected a number"),
            ("resyncInterval", 0.01, "from 0.05 to 3600"),
            ("resyncInterval", 4000, "from 0.05 to 3600"),
            ("leaseSeconds", 0.5, "from 1 to 86400"),
        ):
            self.assertProblem(self.problems({"redis": "redis://h", key: value}), f"state.{key}", words)

    def test_lease_shorter_than_renewal(self) -> None:
        """Leases renewed every leaseSeconds/3 must outlive a timed-out renewal."""
        self.assertProblem(
            self.problems({"redis": "redis://h", "timeout": 2, "leaseSeconds": 5}),
            "state.leaseSeconds",
            "at least 3 times state.timeout",
        )

    def test_bad_breakers(self) -> None:
        self.assertProblem(self.problems({"redis": "redis://h", "breakers": "global"}), "state.breakers", "local", "shared")

    def test_bad_on_unavailable(self) -> None:
        problems = self.problems({"redis": "redis://h", "onUnavailable": {"limits": "allow", "flags": "local"}})
        self.assertProblem(problems, "state.onUnavailable.limits", "refuse", "local", '"allow"')
        self.assertProblem(problems, "state.onUnavailable", '"flags"', "limits, killSwitch, sessions")
        self.assertProblem(self.problems({"redis": "redis://h", "onUnavailable": "refuse"}), "state.onUnavailable", "mapping")

    def test_no_client_installed(self) -> None:
        """A state: section without txredisapi is a config error that says what to install."""
        with mock.patch.object(state_config, "_redis_client_installed", return_value=False):
            problems = self.problems({"redis": f"redis://:{SECRET}@h"})
        self.assertProblem(problems, "state", "txredisapi", "twisted-mcp[redis]")

    def test_password_from_environment_not_in_errors(self) -> None:
        """A password expanded from ${VAR} is kept out of every problem too."""
        problems = self.problems({"redis": "redis://:${PW}@h/x", "timeout": -1}, {"PW": SECRET})
        self.assertProblem(problems, "state.redis", "database number")
        self.assertProblem(problems, "state.timeout", "from 0.01")
