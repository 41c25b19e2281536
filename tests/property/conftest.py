"""
Hypothesis settings for the property tests.

No per-example deadline: the machines that run the suite are shared, and a
slow example is not a failure.  HYPOTHESIS_PROFILE=thorough runs many more
examples (e.g. before a release); the default keeps `make test` quick.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", deadline=None, max_examples=5000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
