"""Addresses as users type them -> the one form Chainwire stores and matches on."""

from __future__ import annotations

from stream.electrum.validate import address_to_script

__all__ = ["canonical_address"]

_BECH32_PREFIXES = ("bc1", "tb1", "bcrt1")


def canonical_address(address: str, network: str) -> str:
    """Validate ``address`` for ``network`` (``ValueError`` naming it and why) and return
    its canonical form: bech32 in lower case, base58 as given."""
    address_to_script(address, network)
    text = address.strip()
    return text.lower() if text.lower().startswith(_BECH32_PREFIXES) else text
