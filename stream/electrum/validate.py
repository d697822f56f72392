"""Input validation: txids, and addresses to Electrum scripthashes (network aware).

Everything here is pure; a bad value raises ``ValueError`` naming it, before anything is
sent to a server.
"""

from __future__ import annotations

import hashlib
from typing import Final

from embit import base58, bech32

__all__ = [
    "NETWORKS",
    "address_to_script",
    "address_to_scripthash",
    "canonical_address",
    "script_to_scripthash",
    "validate_network",
    "validate_scripthash",
    "validate_txid",
]

NETWORKS: Final = ("mainnet", "testnet", "testnet4", "signet", "regtest")

# (bech32 hrp, p2pkh version byte, p2sh version byte) per network. testnet, testnet4 and
# signet share their address formats.
_FORMATS: Final[dict[str, tuple[str, int, int]]] = {
    "mainnet": ("bc", 0x00, 0x05),
    "testnet": ("tb", 0x6F, 0xC4),
    "testnet4": ("tb", 0x6F, 0xC4),
    "signet": ("tb", 0x6F, 0xC4),
    "regtest": ("bcrt", 0x6F, 0xC4),
}
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def validate_network(network: str) -> str:
    if network not in _FORMATS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    return network


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in _HEX for c in value)


def validate_txid(txid: object) -> str:
    """Return the txid in lower case; ``ValueError`` unless it is 64 hex characters."""
    if not _is_hex64(txid):
        raise ValueError(f"invalid txid {txid!r}: expected 64 hex characters")
    assert isinstance(txid, str)
    return txid.lower()


def validate_scripthash(scripthash: object) -> str:
    """Return the scripthash in lower case; ``ValueError`` unless it is 64 hex characters."""
    if not _is_hex64(scripthash):
        raise ValueError(f"invalid scripthash {scripthash!r}: expected 64 hex characters")
    assert isinstance(scripthash, str)
    return scripthash.lower()


def address_to_script(address: object, network: str) -> bytes:
    """The scriptPubKey an address pays to, or ``ValueError`` if the address is malformed
    or belongs to another network."""
    hrp, p2pkh, p2sh = _FORMATS[validate_network(network)]
    if not isinstance(address, str) or not address or len(address) > 100:
        raise ValueError(f"invalid {network} address {address!r}")
    text = address.strip()
    lowered = text.lower()
    # Bech32 is case-insensitive but embit only accepts lower case; all-upper is legal
    # (QR codes), mixed case is not.
    if "1" in lowered and lowered.rpartition("1")[0] in ("bc", "tb", "bcrt"):
        if text != lowered and text != text.upper():
            raise ValueError(f"invalid {network} address {address!r}: mixed-case bech32")
        found_hrp = lowered.rpartition("1")[0]
        if found_hrp != hrp:
            raise ValueError(f"address {address!r} is not a {network} address")
        version, program = bech32.decode(hrp, lowered)
        if version is None or program is None:
            raise ValueError(f"invalid {network} address {address!r}: bad bech32 encoding")
        if version == 1 and len(program) != 32:
            raise ValueError(f"invalid {network} address {address!r}: bad taproot program")
        opcode = 0 if version == 0 else 0x50 + version
        return bytes([opcode, len(program), *program])
    try:
        payload: bytes = base58.decode_check(text)
    except Exception:
        raise ValueError(f"invalid {network} address {address!r}") from None
    if len(payload) != 21:
        raise ValueError(f"invalid {network} address {address!r}: bad length")
    if payload[0] == p2pkh:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if payload[0] == p2sh:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise ValueError(f"address {address!r} is not a {network} address")


def script_to_scripthash(script: bytes) -> str:
    """Electrum's scripthash: sha256 of the scriptPubKey, byte-reversed, in hex."""
    return hashlib.sha256(script).digest()[::-1].hex()


def address_to_scripthash(address: object, network: str) -> str:
    """The Electrum scripthash of an address on ``network`` (``ValueError`` if invalid)."""
    return script_to_scripthash(address_to_script(address, network))


_BECH32_PREFIXES: Final = ("bc1", "tb1", "bcrt1")


def canonical_address(address: str, network: str) -> str:
    """Validate ``address`` for ``network`` (``ValueError`` naming it and why) and return
    its canonical form: bech32 in lower case, base58 as given."""
    address_to_script(address, network)
    text = address.strip()
    return text.lower() if text.lower().startswith(_BECH32_PREFIXES) else text
