"""Drift: reference profiles of a model version's inputs and outputs, and the tests that
compare a window of live rows with them (population stability index, two-sample
Kolmogorov-Smirnov, chi-square). Pure numpy and scipy over plain JSON profiles: the
registry stores them, serving samples live rows and runs the comparison off the loop."""

from servion.drift.compare import FeatureResult, Thresholds, compare
from servion.drift.profile import build_profile, columns_of
from servion.drift.reference import load_labelled, load_reference
from servion.drift.results import freshest

__all__ = [
    "FeatureResult",
    "Thresholds",
    "build_profile",
    "columns_of",
    "compare",
    "freshest",
    "load_labelled",
    "load_reference",
]
