"""Hypothesis profiles for the billing core; HYPOTHESIS_PROFILE=thorough for a long run."""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=2000, deadline=None)
settings.register_profile("thorough", max_examples=100_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
