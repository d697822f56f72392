"""Raw transactions as the producers need them: txid, what each output pays to whom,
and which outputs the inputs spend. Pure; parsing is embit's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from embit.networks import NETWORKS as EMBIT_NETWORKS
from embit.transaction import Transaction

__all__ = ["OutPoint", "Output", "ParsedTx", "parse_tx"]

# Chainwire network name -> embit's network parameters (testnet4 shares testnet's formats).
_EMBIT_NETWORK: Final = {
    "mainnet": EMBIT_NETWORKS["main"],
    "testnet": EMBIT_NETWORKS["test"],
    "testnet4": EMBIT_NETWORKS["test"],
    "signet": EMBIT_NETWORKS["signet"],
    "regtest": EMBIT_NETWORKS["regtest"],
}
_COINBASE_TXID: Final = "00" * 32


@dataclass(frozen=True, slots=True)
class Output:
    address: str | None  # None: a script with no address form (OP_RETURN, bare multisig)
    value_sats: int


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: str
    vout: int


@dataclass(frozen=True, slots=True)
class ParsedTx:
    txid: str
    outputs: tuple[Output, ...]
    spends: tuple[OutPoint, ...]  # empty for a coinbase

    @property
    def total_out_sats(self) -> int:
        return sum(o.value_sats for o in self.outputs)

    @property
    def is_coinbase(self) -> bool:
        return not self.spends

    def received_by(self, address: str) -> int:
        return sum(o.value_sats for o in self.outputs if o.address == address)

    def outputs_json(self) -> list[dict[str, object]]:
        return [{"address": o.address, "value_sats": o.value_sats} for o in self.outputs]


def parse_tx(raw_hex: str, network: str) -> ParsedTx:
    """Parse a raw transaction (hex); ``ValueError`` if it is not one."""
    try:
        params = _EMBIT_NETWORK[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}") from None
    try:
        tx = Transaction.from_string(raw_hex)
    except Exception as exc:  # embit raises assorted errors on garbage
        raise ValueError(f"not a raw transaction: {exc}") from exc
    outputs = []
    for out in tx.vout:
        try:
            address: str | None = out.script_pubkey.address(params)
        except Exception:  # no address form for this script
            address = None
        outputs.append(Output(address, int(out.value)))
    spends = tuple(
        OutPoint(vin.txid.hex(), int(vin.vout))
        for vin in tx.vin
        if not (vin.txid.hex() == _COINBASE_TXID and vin.vout == 0xFFFFFFFF)
    )
    return ParsedTx(tx.txid().hex(), tuple(outputs), spends)
