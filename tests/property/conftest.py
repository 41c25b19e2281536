"""
Hypothesis settings for the property tests.

No per-example deadline: the machines that run the suite are shared, and a
slow example is not a failure.  No example database: a failure prints its
example, and nothing is written into the checkout.  HYPOTHESIS_PROFILE=thorough
runs many more examples (e.g. before a release); the default keeps `make test`
quick.
"""

import os

from hypothesis import HealthCheck, settings

COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("default", **COMMON)
settings.register_profile("thorough", max_examples=5000, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
