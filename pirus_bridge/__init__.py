"""pirus-bridge: repository usage from access logs to COUNTER counts and PIRUS/IRUS gatherers."""

__version__ = "0.1.0"
