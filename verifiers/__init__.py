"""Verifiers: score images (higher is better). Kinds load by name through `load_verifier`; heavy model code is
imported only when a kind is loaded."""

from .base import Verifier, VerifierError
from .ensemble import Ensemble, combine
from .registry import KINDS, describe, load_verifier

__all__ = ["KINDS", "Ensemble", "Verifier", "VerifierError", "combine", "describe", "load_verifier"]
