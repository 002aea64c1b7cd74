"""Nightshift: an automated virtual film studio that works the night shift."""

__version__ = "0.1.0"
