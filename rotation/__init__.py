"""Automated secret rotation for self-hosted Docker Compose stacks."""

__version__ = "0.1.0"
