"""Chainwire's streaming side: Electrum pool, producers, hub and the HTTP/SSE/WS app."""

__version__ = "0.1.0"
