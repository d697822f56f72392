"""An 80-byte block header, parsed; whether its hash meets its own target."""

from __future__ import annotations

from dataclasses import dataclass, field

from embit.hashes import double_sha256

from .pow import target_from_bits

__all__ = ["HEADER_SIZE", "BlockHeader", "meets_target"]

HEADER_SIZE = 80


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """An 80-byte block header. Hashes are display hex (byte-reversed, as in explorers and
    Electrum's JSON); ``raw`` is the header as serialized."""

    version: int
    prev_hash: str
    merkle_root: str
    time: int
    bits: int
    nonce: int
    hash: str
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, data: str | bytes | bytearray) -> BlockHeader:
        """Parse 80 raw bytes or 160 hex characters; ``ValueError`` if it is neither."""
        if isinstance(data, str):
            if len(data) != 2 * HEADER_SIZE:
                raise ValueError(
                    f"a block header is {2 * HEADER_SIZE} hex characters, got {len(data)}"
                )
            try:
                raw = bytes.fromhex(data)
            except ValueError:
                raise ValueError("a block header must be hex: it has non-hex characters") from None
            if len(raw) != HEADER_SIZE:  # fromhex skips whitespace
                raise ValueError("a block header must be hex: it has non-hex characters")
        elif isinstance(data, bytes | bytearray):
            raw = bytes(data)
            if len(raw) != HEADER_SIZE:
                raise ValueError(f"a block header is {HEADER_SIZE} bytes, got {len(raw)}")
        else:
            raise TypeError(f"a block header is bytes or a hex str, got {type(data).__name__}")
        return cls(
            version=int.from_bytes(raw[0:4], "little", signed=True),
            prev_hash=raw[4:36][::-1].hex(),
            merkle_root=raw[36:68][::-1].hex(),
            time=int.from_bytes(raw[68:72], "little"),
            bits=int.from_bytes(raw[72:76], "little"),
            nonce=int.from_bytes(raw[76:80], "little"),
            hash=double_sha256(raw)[::-1].hex(),
            raw=raw,
        )

    def hex(self) -> str:
        """The serialized header as 160 hex characters."""
        return self.raw.hex()


def meets_target(header: BlockHeader) -> bool:
    """Whether the header's hash, read as a little-endian number, is at most the target
    its own ``bits`` encode. False for bits that encode no valid target (negative,
    overflowing or zero): such a header can never be valid."""
    try:
        target = target_from_bits(header.bits)
    except ValueError:
        return False
    return target > 0 and int(header.hash, 16) <= target
