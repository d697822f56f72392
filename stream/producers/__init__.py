"""Producers: turn what the Electrum servers report into Chainwire events.

``headers`` is the pure header-chain core (parse, proof of work, tip, forks) that the
block producer drives; it does no I/O.
"""
