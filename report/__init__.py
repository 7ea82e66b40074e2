"""The search report: what travels on the SEARCH_REPORT wire (JSON payload) and its chart (PIL, numpy)."""

from .report import SearchReport

__all__ = ["SearchReport"]
