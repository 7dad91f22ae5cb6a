"""callbridge: a self-hosted telephony integration hub."""

__version__ = "0.1.0"
