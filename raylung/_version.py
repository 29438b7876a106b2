"""The installed raylung version (one place, so low layers need not import the package root)."""

__version__ = "0.1.0"
