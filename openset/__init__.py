"""openset: an open-set digit classifier that answers a known digit or "other"."""

__version__ = "0.1.0"
