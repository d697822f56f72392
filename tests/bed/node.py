"""A small regtest "bitcoind" for tests: real blocks, real transactions, bitcoind's JSON-RPC.

`RegtestNode` keeps a chain that starts at the real regtest genesis block. Every block links to
its parent, meets its (regtest) proof-of-work target and carries the real merkle root of its
transactions plus a segwit witness commitment. A wallet inside the node owns the coinbase
outputs and funds payments from real earlier outputs, signed with embit, so ElectrumX can index
every input.

ElectrumX talks to the node over HTTP JSON-RPC (the subset of bitcoind's API it uses, including
batches). Tests drive the node with plain synchronous, thread-safe methods (`mine`, `pay`,
`reorg`, `evict`, ...); a human can drive it with curl through bitcoind-named RPCs
(`generatetoaddress`, `sendtoaddress`) and a few custom ones (`reorg`, `evict`,
`setfeeestimate`, `makemanytxs`).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import itertools
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from embit import base58, bech32
from embit.ec import PrivateKey
from embit.networks import NETWORKS
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

__all__ = [
    "ADDRESS_KINDS",
    "COINBASE_MATURITY",
    "REGTEST_GENESIS_HASH",
    "RPCError",
    "RegtestNode",
    "address_to_script",
    "script_to_address",
    "scripthash",
]

logger = logging.getLogger(__name__)

REGTEST = NETWORKS["regtest"]
REGTEST_GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
# The real regtest genesis block (same coinbase as mainnet's, regtest time/bits/nonce).
_GENESIS_COINBASE = bytes.fromhex(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ff"
    "ff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272"
    "696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000"
    "434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f3"
    "5504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
_GENESIS_TIME = 1296688602
_GENESIS_NONCE = 2
REGTEST_BITS = 0x207FFFFF
_TARGET = (REGTEST_BITS & 0xFFFFFF) << (8 * ((REGTEST_BITS >> 24) - 3))
COINBASE_MATURITY = 100
_HALVING_INTERVAL = 150  # regtest
_BLOCK_VERSION = 0x20000000
_COIN = 100_000_000
_DUST = 546
# bitcoind's network version 31.0.0: ElectrumX 2.0 requires >= 31.0 (txospenderindex).
_NODE_VERSION = 310000
_RELAY_FEE_BTC_KVB = 0.00001

ADDRESS_KINDS = ("p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr")
# Rough input vsize per kind, to price our own transactions before signing them.
_INPUT_VSIZE = {"p2pkh": 148, "p2sh": 91, "p2wpkh": 68, "p2wsh": 79, "p2tr": 58}
# getnewaddress's address_type names
_CORE_ADDRESS_TYPES = {"legacy": "p2pkh", "p2sh-segwit": "p2sh", "bech32": "p2wpkh",
                       "bech32m": "p2tr"}

Outpoint = tuple[str, int]


class RPCError(Exception):
    """An error in bitcoind's shape: `{"code": code, "message": message}`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


# --- small encoding helpers ------------------------------------------------------------------


def _dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def _push(data: bytes) -> bytes:
    """A minimal script push of `data` (up to 75 bytes is all we need)."""
    assert len(data) <= 75
    return bytes([len(data)]) + data


def _script_num(n: int) -> bytes:
    """Script number encoding (little endian, sign bit), as BIP34 wants for the height."""
    out = bytearray()
    while n:
        out.append(n & 0xFF)
        n >>= 8
    if out and out[-1] & 0x80:
        out.append(0)
    return bytes(out)


def _merkle_root(hashes: list[bytes]) -> bytes:
    level = hashes
    while len(level) > 1:
        if len(level) % 2:
            level = [*level, level[-1]]
        level = [_dsha(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _btc(sats: int) -> float:
    return round(sats / _COIN, 8)


def _sats(amount: Any) -> int:
    """Whole sats from a BTC amount given as a JSON number or string."""
    sats = Decimal(str(amount)) * _COIN
    if sats != sats.to_integral_value() or sats <= 0:
        raise RPCError(-3, f"Invalid amount {amount}")
    return int(sats)


def address_to_script(address: str) -> bytes:
    """The scriptPubKey of a regtest address; ValueError for anything else."""
    try:
        if address.lower().startswith(REGTEST["bech32"] + "1"):
            ver, prog = bech32.decode(REGTEST["bech32"], address)
            if ver is None or prog is None:
                raise ValueError("bad bech32")
            return bytes([ver + 0x50 if ver else 0, len(prog), *prog])
        raw = bytes(base58.decode_check(address))
    except Exception as e:
        raise ValueError(f"not a regtest address: {address!r}") from e
    if len(raw) == 21 and raw[:1] == REGTEST["p2pkh"]:
        return b"\x76\xa9\x14" + raw[1:] + b"\x88\xac"
    if len(raw) == 21 and raw[:1] == REGTEST["p2sh"]:
        return b"\xa9\x14" + raw[1:] + b"\x87"
    raise ValueError(f"not a regtest address: {address!r}")


def script_to_address(script: bytes) -> str | None:
    """The regtest address of a standard scriptPubKey, None for other scripts."""
    try:
        return str(Script(script).address(REGTEST))
    except Exception:
        return None


def scripthash(script_or_address: bytes | str) -> str:
    """The Electrum protocol's script hash (sha256 of the script, byte-reversed, hex)."""
    script = (address_to_script(script_or_address) if isinstance(script_or_address, str)
              else script_or_address)
    return hashlib.sha256(script).digest()[::-1].hex()


# --- chain objects -----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Tx:
    txid: str
    wtxid: str
    raw: bytes
    stripped_size: int
    inputs: tuple[Outpoint, ...]  # empty for a coinbase
    outputs: tuple[tuple[int, bytes], ...]  # (value, scriptPubKey)
    coinbase: bool = False
    fee: int = 0
    time: int = 0

    @property
    def weight(self) -> int:
        return 3 * self.stripped_size + len(self.raw)

    @property
    def vsize(self) -> int:
        return (self.weight + 3) // 4

    @classmethod
    def from_raw(cls, raw: bytes) -> _Tx:
        tx = Transaction.parse(raw)
        if tx.serialize() != raw:
            raise ValueError("non-canonical transaction encoding")
        return cls.from_embit(tx, raw)

    @classmethod
    def from_embit(cls, tx: Transaction, raw: bytes | None = None) -> _Tx:
        raw = tx.serialize() if raw is None else raw
        stripped = _strip_witness(tx, raw)
        first = tx.vin[0] if tx.vin else None
        coinbase = (len(tx.vin) == 1 and first is not None and first.txid == b"\0" * 32
                    and first.vout == 0xFFFFFFFF)
        return cls(
            txid=_dsha(stripped)[::-1].hex(),
            wtxid=_dsha(raw)[::-1].hex(),
            raw=raw,
            stripped_size=len(stripped),
            inputs=() if coinbase else tuple((inp.txid.hex(), inp.vout) for inp in tx.vin),
            outputs=tuple((out.value, out.script_pubkey.data) for out in tx.vout),
            coinbase=coinbase,
        )


def _strip_witness(tx: Transaction, raw: bytes) -> bytes:
    if not tx.is_segwit:
        return raw
    witness_len = sum(len(inp.witness.serialize()) for inp in tx.vin)
    return raw[:4] + raw[6 : len(raw) - 4 - witness_len] + raw[-4:]


@dataclass(slots=True, eq=False)
class _Block:
    hash: str
    height: int
    header: bytes
    txs: list[_Tx]
    _raw: bytes | None = None

    @property
    def prev_hash(self) -> str:
        return self.header[4:36][::-1].hex()

    @property
    def time(self) -> int:
        return int(struct.unpack_from("<I", self.header, 68)[0])

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = b"".join([self.header, _varint(len(self.txs)), *(t.raw for t in self.txs)])
        return self._raw


@dataclass(slots=True)
class _Key:
    """A key the node owns, and the one address of `kind` it was made for."""

    kind: str
    key: PrivateKey
    script: bytes
    address: str
    pub: bytes = field(init=False)
    # p2sh: the p2wpkh redeem script; p2wsh: the witness script
    inner: bytes = b""

    def __post_init__(self) -> None:
        self.pub = self.key.get_public_key().sec()


def _make_key(kind: str, key: PrivateKey) -> _Key:
    pub = key.get_public_key()
    h160 = _hash160(pub.sec())
    inner = b""
    if kind == "p2pkh":
        script = b"\x76\xa9\x14" + h160 + b"\x88\xac"
    elif kind == "p2wpkh":
        script = b"\x00\x14" + h160
    elif kind == "p2sh":  # p2sh-p2wpkh, the common "nested segwit" kind
        inner = b"\x00\x14" + h160
        script = b"\xa9\x14" + _hash160(inner) + b"\x87"
    elif kind == "p2wsh":  # a single-key script: <pubkey> OP_CHECKSIG
        inner = _push(pub.sec()) + b"\xac"
        script = b"\x00\x20" + hashlib.sha256(inner).digest()
    elif kind == "p2tr":  # key path only
        script = b"\x51\x20" + pub.taproot_tweak(b"").xonly()
    else:
        raise ValueError(f"unknown address kind {kind!r}; expected one of {ADDRESS_KINDS}")
    address = script_to_address(script)
    assert address is not None
    return _Key(kind=kind, key=key, script=script, address=address, inner=inner)


# --- the node ------------------------------------------------------------------------------------


class RegtestNode:
    """A regtest chain with a wallet, served over bitcoind's JSON-RPC on 127.0.0.1.

    Every public method is synchronous and thread-safe: tests call them directly while
    ElectrumX polls the RPC port from its own processes.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        user: str = "user",
        password: str = "pass",
        initial_blocks: int = 101,
        fee_rate: float = 2.0,
        seed: bytes = b"chainwire-bed",
    ) -> None:
        """`port` 0 picks a free port; `initial_blocks` are mined at `start()` so that coins
        are mature; `fee_rate` (sat/vB) prices the wallet's own transactions."""
        if initial_blocks < 0:
            raise ValueError(f"initial_blocks must be >= 0, got {initial_blocks}")
        if fee_rate < 0:
            raise ValueError(f"fee_rate must be >= 0, got {fee_rate}")
        self._port = port
        self._user = user
        self._password = password
        self._initial_blocks = initial_blocks
        self.fee_rate = fee_rate
        self._seed = seed
        self._lock = threading.RLock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

        self._chain: list[_Block] = []
        self._blocks_by_hash: dict[str, _Block] = {}  # also stale blocks: ElectrumX asks in reorgs
        self._txs: dict[str, _Tx] = {}  # txindex: active chain + mempool
        self._tx_block: dict[str, _Block] = {}
        self._mempool: dict[str, _Tx] = {}  # insertion order is a topological order
        self._utxo: dict[Outpoint, tuple[int, bytes, int]] = {}  # value, script, coinbase height
        self._spender: dict[Outpoint, str] = {}  # chain + mempool (txospenderindex)
        self._keys: dict[bytes, _Key] = {}  # script -> key, every key the node owns
        self._owned: dict[bytes, dict[Outpoint, None]] = {}  # script -> its unspent outpoints
        self._fee_estimates: dict[int, float] = {}
        self._key_counter = itertools.count()
        self._extranonce = itertools.count()
        self._foreign_counter = itertools.count()

        self._wallet = self._new_key("p2wpkh")
        self._add_genesis()

        self._rpc_methods: dict[str, tuple[Callable[..., Any], inspect.Signature]] = {}
        for name in dir(type(self)):
            if name.startswith("_rpc_"):
                method = getattr(self, name)
                self._rpc_methods[name[len("_rpc_") :]] = (method, inspect.signature(method))

    # --- lifecycle ---

    def start(self) -> RegtestNode:
        """Mine the initial blocks and serve JSON-RPC in a background thread."""
        if self._server is not None:
            raise RuntimeError("the node is already running")
        if self.height == 0 and self._initial_blocks:
            self.mine(self._initial_blocks)
        server = _HTTPServer(("127.0.0.1", self._port), _Handler)
        server.node = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"regtest-node:{self._port}", daemon=True,
        )
        self._thread.start()
        logger.info("regtest node listening on 127.0.0.1:%d at height %d", self._port,
                    self.height)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). The chain stays in memory."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the handler threads
        thread.join()

    def __enter__(self) -> RegtestNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def rpc_url(self) -> str:
        """`http://user:pass@127.0.0.1:PORT/` - what ElectrumX's DAEMON_URL wants."""
        return f"http://{self._user}:{self._password}@127.0.0.1:{self._port}/"

    # --- chain state ---

    @property
    def height(self) -> int:
        with self._lock:
            return len(self._chain) - 1

    @property
    def tip_hash(self) -> str:
        with self._lock:
            return self._chain[-1].hash

    @property
    def mempool_txids(self) -> list[str]:
        with self._lock:
            return list(self._mempool)

    @property
    def wallet_address(self) -> str:
        """The address the wallet mines to and sends change to."""
        return self._wallet.address

    def block_hash(self, height: int) -> str:
        with self._lock:
            return self._block_at(height).hash

    def header(self, height: int) -> bytes:
        """The 80-byte header at `height` of the active chain."""
        with self._lock:
            return self._block_at(height).header

    def block_txids(self, block: int | str) -> list[str]:
        """The txids of a block given by height (active chain) or hash (any known block)."""
        with self._lock:
            return [tx.txid for tx in self._find_block(block).txs]

    def raw_block(self, block: int | str) -> bytes:
        with self._lock:
            return self._find_block(block).raw

    def raw_transaction(self, txid: str) -> bytes:
        """A transaction of the active chain or the mempool; KeyError otherwise."""
        with self._lock:
            return self._txs[txid].raw

    def tx_height(self, txid: str) -> int | None:
        """The height of a confirmed transaction, 0 for the mempool, None if unknown."""
        with self._lock:
            if txid in self._mempool:
                return 0
            block = self._tx_block.get(txid)
            return None if block is None else block.height

    def tx_fee(self, txid: str) -> int:
        with self._lock:
            return self._txs[txid].fee

    def balance(self, address: str | None = None) -> int:
        """Unspent sats (mempool included) of an address, by default the wallet's."""
        script = self._wallet.script if address is None else address_to_script(address)
        with self._lock:
            if script in self._owned:
                return sum(self._utxo[op][0] for op in self._owned[script])
            return sum(v for v, s, _ in self._utxo.values() if s == script)

    # --- wallet ---

    def new_address(self, kind: str = "p2wpkh") -> str:
        """A fresh regtest address of `kind` (p2pkh, p2sh, p2wpkh, p2wsh, p2tr).

        The node holds its key, so `pay(..., from_address=it)` can spend what it received; the
        wallet never spends it on its own."""
        with self._lock:
            return self._new_key(kind).address

    def pay(self, address: str, sats: int, *, from_address: str | None = None) -> str:
        """Pay `sats` to `address`; returns the txid of the new mempool transaction."""
        return self.pay_many([(address, sats)], from_address=from_address)

    def pay_many(self, outputs: Sequence[tuple[str, int]], *,
                 from_address: str | None = None) -> str:
        """One transaction paying every (address, sats) in `outputs`."""
        return self._pay_scripts([(address_to_script(a), s) for a, s in outputs], from_address)

    def pay_script(self, script_pubkey: bytes, sats: int) -> str:
        """Pay to a raw scriptPubKey (OP_RETURN, bare multisig, anything)."""
        return self._pay_scripts([(bytes(script_pubkey), sats)], None)

    def fan_out(self, n: int, sats: int) -> str:
        """One transaction giving the wallet `n` outputs of `sats` (to spend in parallel)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return self._pay_scripts([(self._wallet.script, sats)] * n, None)

    def make_many_txs(self, n: int, sats: int | Sequence[int] = 10_000,
                      addresses: Sequence[str] | None = None) -> list[str]:
        """Put `n` payments into the mempool, fast (~0.2 ms each), e.g. for a big block.

        Payment i pays `sats` (or `sats[i]`) to `addresses[i % len(addresses)]`, by default to
        throw-away p2wpkh addresses nobody watches. All are funded by one fan-out transaction
        that precedes them in the mempool; the returned list holds the n payment txids."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        amounts = [sats] * n if isinstance(sats, int) else list(sats)
        if len(amounts) != n:
            raise ValueError(f"got {len(amounts)} amounts for {n} transactions")
        if addresses:
            scripts = [address_to_script(a) for a in addresses]
        else:
            scripts = [b"\x00\x14" + _dsha(b"foreign%d" % next(self._foreign_counter))[:20]
                       for _ in range(n)]
        w = self._wallet
        child_fee = self._fee(["p2wpkh"], [scripts[0]])
        with self._lock:
            parent = self._get_tx(self._pay_scripts(
                [(w.script, a + child_fee) for a in amounts], None))
            txids = []
            for i, amount in enumerate(amounts):
                value = amount + child_fee
                script = scripts[i % len(scripts)]
                tx = Transaction(vin=[TransactionInput(bytes.fromhex(parent.txid), i)],
                                 vout=[TransactionOutput(amount, Script(script))])
                self._sign(tx, [(w, value)])
                txids.append(self._accept(_Tx.from_embit(tx)).txid)
            return txids

    def _pay_scripts(self, outputs: Sequence[tuple[bytes, int]], from_address: str | None) -> str:
        for _, sats in outputs:
            if not isinstance(sats, int) or sats <= 0:
                raise ValueError(f"amounts must be positive whole sats, got {sats!r}")
        source = self._wallet
        if from_address is not None:
            found = self._keys.get(address_to_script(from_address))
            if found is None:
                raise ValueError(f"the node holds no key for {from_address}")
            source = found
        with self._lock:
            total = sum(s for _, s in outputs)
            coins: list[tuple[Outpoint, int]] = []
            gathered = 0
            fee = self._fee([source.kind], [s for s, _ in outputs] + [source.script])
            # newest first: usually one recent change output covers a payment
            for op in reversed(self._owned[source.script]):
                value, _, cb_height = self._utxo[op]
                if cb_height >= 0 and self.height + 1 - cb_height < COINBASE_MATURITY:
                    continue
                coins.append((op, value))
                gathered += value
                fee = self._fee([source.kind] * len(coins),
                                [s for s, _ in outputs] + [source.script])
                if gathered >= total + fee:
                    break
            else:
                raise ValueError(
                    f"{source.address} holds {gathered} spendable sats, needs {total + fee}; "
                    "mine more blocks (coinbase outputs mature after 100)")
            vout = [TransactionOutput(s, Script(script)) for script, s in outputs]
            change = gathered - total - fee
            if change >= _DUST:
                vout.append(TransactionOutput(change, Script(source.script)))
            tx = Transaction(vin=[TransactionInput(bytes.fromhex(t), n) for (t, n), _ in coins],
                             vout=vout)
            self._sign(tx, [(source, v) for _, v in coins])
            return self._accept(_Tx.from_embit(tx)).txid

    def _fee(self, input_kinds: Sequence[str], output_scripts: Sequence[bytes]) -> int:
        vsize = 11 + sum(_INPUT_VSIZE[k] for k in input_kinds) + sum(
            9 + len(s) for s in output_scripts)
        return int(vsize * self.fee_rate + 0.999)

    def _sign(self, tx: Transaction, spent: Sequence[tuple[_Key, int]]) -> None:
        """Sign every input of `tx`; `spent[i]` is the key and value of input i's coin."""
        for i, (k, value) in enumerate(spent):
            inp = tx.vin[i]
            if k.kind in ("p2wpkh", "p2sh"):
                code = Script(b"\x76\xa9\x14" + _hash160(k.pub) + b"\x88\xac")
                sig = k.key.sign(tx.sighash_segwit(i, code, value)).serialize() + b"\x01"
                inp.witness = Witness([sig, k.pub])
                if k.kind == "p2sh":
                    inp.script_sig = Script(_push(k.inner))
            elif k.kind == "p2wsh":
                sig = k.key.sign(tx.sighash_segwit(i, Script(k.inner), value)).serialize()
                inp.witness = Witness([sig + b"\x01", k.inner])
            elif k.kind == "p2pkh":
                sig = k.key.sign(tx.sighash_legacy(i, Script(k.script))).serialize() + b"\x01"
                inp.script_sig = Script(_push(sig) + _push(k.pub))
            else:  # p2tr key path, SIGHASH_DEFAULT
                msg = tx.sighash_taproot(i, [Script(kk.script) for kk, _ in spent],
                                         [v for _, v in spent], SIGHASH.DEFAULT)
                inp.witness = Witness([k.key.taproot_tweak(b"").schnorr_sign(msg).serialize()])

    def _new_key(self, kind: str) -> _Key:
        secret = hashlib.sha256(self._seed + b"/key/%d" % next(self._key_counter)).digest()
        k = _make_key(kind, PrivateKey(secret, network=REGTEST))
        self._keys[k.script] = k
        owned = self._owned.setdefault(k.script, {})
        for op, (_, script, _) in self._utxo.items():  # normally none: a fresh key
            if script == k.script:
                owned[op] = None
        return k

    # --- mining, reorgs, eviction ---

    def mine(self, n: int = 1, to_address: str | None = None,
             txids: Iterable[str] | None = None) -> list[str]:
        """Mine `n` blocks; the first takes every mempool transaction, or only `txids` (plus
        their unconfirmed ancestors). Coinbases pay `to_address`, by default the wallet."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        script = self._wallet.script if to_address is None else address_to_script(to_address)
        with self._lock:
            first = self._select_for_block(txids)
            return [self._mine_block(first if i == 0 else [], script).hash for i in range(n)]

    def reorg(self, depth: int, new_blocks: int | None = None, drop_txids: Iterable[str] = (),
              *, remine: bool = False) -> list[str]:
        """Replace the last `depth` blocks by `new_blocks` (default depth + 1) new ones.

        Transactions of the removed blocks go back to the mempool, except `drop_txids`, which
        vanish with their descendants (as a double-spent transaction would). With `remine`, the
        first new block mines the whole mempool again. ElectrumX notices a reorg only when the
        chain grows, so `new_blocks` must be > `depth`. Returns the new block hashes."""
        new_blocks = depth + 1 if new_blocks is None else new_blocks
        drop = list(drop_txids)
        with self._lock:
            if not 1 <= depth <= self.height:
                raise ValueError(f"depth must be between 1 and {self.height}, got {depth}")
            if new_blocks <= depth:
                raise ValueError(f"new_blocks must be > depth ({depth}), got {new_blocks}")
            removed = self._chain[-depth:]
            returned = [tx for b in removed for tx in b.txs[1:]]
            unknown = set(drop) - {tx.txid for tx in returned} - set(self._mempool)
            if unknown:
                raise ValueError(f"not in the removed blocks nor the mempool: {sorted(unknown)}")
            del self._chain[-depth:]
            for b in removed:
                for tx in b.txs:
                    del self._tx_block[tx.txid]
            # returned transactions stay applied to the UTXO set: only their height changes
            mempool = {tx.txid: tx for tx in returned}
            mempool.update(self._mempool)
            self._mempool = mempool
            coinbases = [b.txs[0] for b in removed]
            self._remove_from_mempool(self._descendants([*drop, *(c.txid for c in coinbases)]))
            for cb in reversed(coinbases):
                self._unapply(cb)
            first = list(self._mempool.values()) if remine else []
            script = self._wallet.script
            hashes = [self._mine_block(first if i == 0 else [], script).hash
                      for i in range(new_blocks)]
            logger.info("reorg: replaced %d blocks by %d, dropped %d txs", depth, new_blocks,
                        len(drop))
            return hashes

    def evict(self, txid: str) -> list[str]:
        """Remove a mempool transaction and its descendants; returns the removed txids."""
        with self._lock:
            if txid not in self._mempool:
                raise KeyError(f"{txid} is not in the mempool")
            gone = self._descendants([txid])
            self._remove_from_mempool(gone)
            return [t for t in gone]

    def double_spend(self, txid: str, address: str | None = None) -> str:
        """Replace a mempool transaction by a conflicting one spending the same inputs (all
        must be the node's), paying everything but a higher fee to `address` (default: the
        wallet). The original and its descendants leave the mempool; returns the new txid.

        For a confirmed transaction: `reorg(depth)` puts it back in the mempool first."""
        with self._lock:
            original = self._mempool.get(txid)
            if original is None:
                raise KeyError(f"{txid} is not in the mempool")
            spent = []
            for op in original.inputs:
                value, script = self._txs[op[0]].outputs[op[1]]
                key = self._keys.get(script)
                if key is None:
                    raise ValueError(f"input {op[0]}:{op[1]} is not the node's to spend")
                spent.append((op, key, value))
            script = self._wallet.script if address is None else address_to_script(address)
            fee = 2 * original.fee + self._fee([k.kind for _, k, _ in spent], [script])
            total = sum(v for _, _, v in spent)
            if total - fee < _DUST:
                raise ValueError(f"inputs of {txid} hold too little to pay a higher fee")
            self._remove_from_mempool(self._descendants([txid]))
            tx = Transaction(vin=[TransactionInput(bytes.fromhex(t), n) for (t, n), _, _ in spent],
                             vout=[TransactionOutput(total - fee, Script(script))])
            self._sign(tx, [(k, v) for _, k, v in spent])
            return self._accept(_Tx.from_embit(tx)).txid

    def set_fee_estimate(self, rate: float | Mapping[int, float] | None) -> None:
        """What `estimatesmartfee` answers, in sat/vB: one rate for every target, a mapping
        target -> rate (a target uses the largest mapped target <= it), or None for "no
        estimate" (a fresh regtest node's answer)."""
        if rate is None:
            estimates: dict[int, float] = {}
        elif isinstance(rate, Mapping):
            estimates = {int(t): float(r) for t, r in rate.items()}
        else:
            estimates = {1: float(rate)}
        if any(t < 1 or r < 0 for t, r in estimates.items()):
            raise ValueError(f"targets must be >= 1 and rates >= 0, got {rate!r}")
        with self._lock:
            self._fee_estimates = dict(sorted(estimates.items()))

    def fee_estimate(self, target: int) -> float | None:
        """The sat/vB rate `estimatesmartfee(target)` answers, or None."""
        with self._lock:
            best = None
            for t, r in self._fee_estimates.items():
                if t <= target or best is None:
                    best = r
            return best

    # --- internals (call with the lock held) ---

    def _block_at(self, height: int) -> _Block:
        if not 0 <= height < len(self._chain):
            raise IndexError(f"height {height} out of range 0..{len(self._chain) - 1}")
        return self._chain[height]

    def _find_block(self, block: int | str) -> _Block:
        if isinstance(block, int):
            return self._block_at(block)
        return self._blocks_by_hash[block]

    def _get_tx(self, txid: str) -> _Tx:
        return self._txs[txid]

    def _add_genesis(self) -> None:
        cb = _Tx.from_raw(_GENESIS_COINBASE)
        cb.coinbase = True
        cb.time = _GENESIS_TIME
        header = (struct.pack("<I", 1) + b"\0" * 32 + bytes.fromhex(cb.txid)[::-1]
                  + struct.pack("<III", _GENESIS_TIME, REGTEST_BITS, _GENESIS_NONCE))
        block = _Block(_dsha(header)[::-1].hex(), 0, header, [cb])
        assert block.hash == REGTEST_GENESIS_HASH
        # Like bitcoind, the genesis output is not spendable and not in the txindex.
        self._chain.append(block)
        self._blocks_by_hash[block.hash] = block

    def _apply(self, tx: _Tx, cb_height: int = -1) -> None:
        """Add a transaction's effects to the UTXO set (chain + mempool view)."""
        for op in tx.inputs:
            _, script, _ = self._utxo.pop(op)
            self._spender[op] = tx.txid
            owned = self._owned.get(script)
            if owned is not None:
                del owned[op]
        for n, (value, script) in enumerate(tx.outputs):
            op = (tx.txid, n)
            self._utxo[op] = (value, script, cb_height)
            owned = self._owned.get(script)
            if owned is not None:
                owned[op] = None
        self._txs[tx.txid] = tx

    def _unapply(self, tx: _Tx) -> None:
        """Undo `_apply`; the transaction's outputs must be unspent."""
        for n, (_, script) in enumerate(tx.outputs):
            op = (tx.txid, n)
            del self._utxo[op]
            owned = self._owned.get(script)
            if owned is not None:
                del owned[op]
        for op in tx.inputs:
            prev = self._txs[op[0]]
            value, script = prev.outputs[op[1]]
            block = self._tx_block.get(prev.txid)
            cb_height = block.height if prev.coinbase and block is not None else -1
            self._utxo[op] = (value, script, cb_height)
            del self._spender[op]
            owned = self._owned.get(script)
            if owned is not None:
                owned[op] = None
        del self._txs[tx.txid]

    def _accept(self, tx: _Tx) -> _Tx:
        """Validate a transaction against the UTXO set and add it to the mempool."""
        if tx.coinbase:
            raise RPCError(-26, "coinbase")
        if not tx.inputs or not tx.outputs:
            raise RPCError(-26, "bad-txns-vin-empty" if not tx.inputs else "bad-txns-vout-empty")
        if tx.txid in self._tx_block:
            raise RPCError(-27, "Transaction outputs already in utxo set")
        if len(set(tx.inputs)) != len(tx.inputs):
            raise RPCError(-26, "bad-txns-inputs-duplicate")
        total_in = 0
        for op in tx.inputs:
            coin = self._utxo.get(op)
            if coin is None:
                if op in self._spender and self._spender[op] in self._mempool:
                    raise RPCError(-26, "txn-mempool-conflict")
                raise RPCError(-25, "bad-txns-inputs-missingorspent")
            value, _, cb_height = coin
            if cb_height >= 0 and self.height + 1 - cb_height < COINBASE_MATURITY:
                raise RPCError(-26, "bad-txns-premature-spend-of-coinbase")
            total_in += value
        total_out = sum(v for v, _ in tx.outputs)
        if total_out > total_in:
            raise RPCError(-26, "bad-txns-in-belowout")
        tx.fee = total_in - total_out
        tx.time = int(time.time())
        self._apply(tx)
        self._mempool[tx.txid] = tx
        return tx

    def _descendants(self, roots: Iterable[str]) -> set[str]:
        out: set[str] = set()
        stack = list(roots)
        while stack:
            txid = stack.pop()
            if txid in out:
                continue
            out.add(txid)
            for n in range(len(self._txs[txid].outputs)):
                spender = self._spender.get((txid, n))
                if spender is not None:
                    stack.append(spender)
        return out

    def _remove_from_mempool(self, txids: set[str]) -> None:
        for tx in reversed(list(self._mempool.values())):  # children before parents
            if tx.txid in txids:
                self._unapply(tx)
                del self._mempool[tx.txid]

    def _select_for_block(self, txids: Iterable[str] | None) -> list[_Tx]:
        if txids is None:
            return list(self._mempool.values())
        wanted: set[str] = set()
        stack = list(txids)
        while stack:
            txid = stack.pop()
            if txid in wanted:
                continue
            if txid not in self._mempool:
                raise KeyError(f"{txid} is not in the mempool")
            wanted.add(txid)
            stack.extend(t for t, _ in self._mempool[txid].inputs if t in self._mempool)
        return [tx for tx in self._mempool.values() if tx.txid in wanted]

    def _mine_block(self, txs: list[_Tx], script: bytes) -> _Block:
        height = len(self._chain)
        prev = self._chain[-1]
        reward = (50 * _COIN >> (height // _HALVING_INTERVAL)) + sum(t.fee for t in txs)
        # segwit commitment: coinbase wtxid counts as zero, reserved value is 32 zero bytes
        wroot = _merkle_root([b"\0" * 32, *(bytes.fromhex(t.wtxid)[::-1] for t in txs)])
        commitment = b"\x6a\x24\xaa\x21\xa9\xed" + _dsha(wroot + b"\0" * 32)
        height_push = (bytes([0x50 + height]) if 1 <= height <= 16
                       else _push(_script_num(height)))
        script_sig = height_push + _push(struct.pack("<Q", next(self._extranonce)))
        cb_in = b"\0" * 32 + b"\xff\xff\xff\xff" + _varint(len(script_sig)) + script_sig + (
            b"\xff\xff\xff\xff")
        outs = (struct.pack("<Q", reward) + _varint(len(script)) + script
                + struct.pack("<Q", 0) + _varint(len(commitment)) + commitment)
        body = b"\x01" + cb_in + b"\x02" + outs
        stripped = struct.pack("<I", 2) + body + b"\0\0\0\0"
        raw = struct.pack("<I", 2) + b"\x00\x01" + body + b"\x01\x20" + b"\0" * 32 + b"\0\0\0\0"
        cb = _Tx(txid=_dsha(stripped)[::-1].hex(), wtxid=_dsha(raw)[::-1].hex(), raw=raw,
                 stripped_size=len(stripped), inputs=(), outputs=((reward, script),
                                                                   (0, commitment)),
                 coinbase=True)
        all_txs = [cb, *txs]
        root = _merkle_root([bytes.fromhex(t.txid)[::-1] for t in all_txs])
        block_time = max(int(time.time()), prev.time + 1)
        head = struct.pack("<I", _BLOCK_VERSION) + bytes.fromhex(prev.hash)[::-1] + root + (
            struct.pack("<II", block_time, REGTEST_BITS))
        for nonce in itertools.count():  # about two tries on average
            header = head + struct.pack("<I", nonce)
            digest = _dsha(header)
            if int.from_bytes(digest, "little") <= _TARGET:
                break
        block = _Block(digest[::-1].hex(), height, header, all_txs)
        cb.time = block_time
        self._chain.append(block)
        self._blocks_by_hash[block.hash] = block
        self._apply(cb, cb_height=height)
        for tx in all_txs:
            self._tx_block[tx.txid] = block
        for tx in txs:
            del self._mempool[tx.txid]
        return block

    # --- JSON-RPC ---

    def _handle_http(self, body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            return 500, _reply(None, None, RPCError(-32700, "Parse error"))
        if isinstance(request, list):
            with self._lock:  # one consistent view for the whole batch
                return 200, [self._dispatch(r)[1] for r in request]
        return self._dispatch(request)

    def _dispatch(self, request: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return 400, _reply(None, None, RPCError(-32600, "Invalid Request object"))
        rid, name = request.get("id"), request["method"]
        params = request.get("params") or []
        entry = self._rpc_methods.get(name)
        if entry is None:
            return 404, _reply(rid, None, RPCError(-32601, "Method not found"))
        method, signature = entry
        try:
            if isinstance(params, dict):
                bound = signature.bind(**params)
            else:
                bound = signature.bind(*params)
        except TypeError:
            return 500, _reply(rid, None, RPCError(-1, f"{name} {signature}"))
        try:
            with self._lock:
                return 200, _reply(rid, method(*bound.args, **bound.kwargs), None)
        except RPCError as e:
            return 500, _reply(rid, None, e)
        except (ValueError, KeyError, TypeError) as e:
            return 500, _reply(rid, None, RPCError(-8, str(e)))
        except Exception as e:
            logger.exception("RPC %s failed", name)
            return 500, _reply(rid, None, RPCError(-1, f"internal error: {e!r}"))

    def _rpc_getblockcount(self) -> int:
        return self.height

    def _rpc_getbestblockhash(self) -> str:
        return self.tip_hash

    def _rpc_getblockhash(self, height: int) -> str:
        if not isinstance(height, int) or not 0 <= height < len(self._chain):
            raise RPCError(-8, "Block height out of range")
        return self._chain[height].hash

    def _rpc_getblock(self, blockhash: str, verbosity: int | bool = 1) -> Any:
        block = self._blocks_by_hash.get(blockhash)
        if block is None:
            raise RPCError(-5, "Block not found")
        if int(verbosity) == 0:
            return block.raw.hex()
        info = self._header_json(block)
        info.update(size=len(block.raw), strippedsize=len(block.raw) - sum(
            len(t.raw) - t.stripped_size for t in block.txs), nTx=len(block.txs))
        info["weight"] = sum(t.weight for t in block.txs) + 4 * (80 + len(_varint(len(block.txs))))
        info["tx"] = ([t.txid for t in block.txs] if int(verbosity) == 1
                      else [self._tx_json(t, with_block=False) for t in block.txs])
        return info

    def _rpc_getblockheader(self, blockhash: str, verbose: bool = True) -> Any:
        block = self._blocks_by_hash.get(blockhash)
        if block is None:
            raise RPCError(-5, "Block not found")
        return self._header_json(block) if verbose else block.header.hex()

    def _header_json(self, block: _Block) -> dict[str, Any]:
        active = block.height < len(self._chain) and self._chain[block.height] is block
        info: dict[str, Any] = {
            "hash": block.hash,
            "confirmations": len(self._chain) - block.height if active else -1,
            "height": block.height,
            "version": struct.unpack_from("<I", block.header)[0],
            "merkleroot": block.header[36:68][::-1].hex(),
            "time": block.time,
            "mediantime": block.time,
            "nonce": struct.unpack_from("<I", block.header, 76)[0],
            "bits": f"{REGTEST_BITS:08x}",
            "difficulty": 4.656542373906925e-10,
            "nTx": len(block.txs),
        }
        if block.height:
            info["previousblockhash"] = block.prev_hash
        if active and block.height + 1 < len(self._chain):
            info["nextblockhash"] = self._chain[block.height + 1].hash
        return info

    def _rpc_getblockchaininfo(self) -> dict[str, Any]:
        tip = self._chain[-1]
        return {"chain": "regtest", "blocks": tip.height, "headers": tip.height,
                "bestblockhash": tip.hash, "bits": f"{REGTEST_BITS:08x}",
                "difficulty": 4.656542373906925e-10, "time": tip.time, "mediantime": tip.time,
                "verificationprogress": 1, "initialblockdownload": False, "pruned": False,
                "warnings": []}

    def _rpc_getnetworkinfo(self) -> dict[str, Any]:
        return {"version": _NODE_VERSION, "subversion": "/Satoshi:31.0.0/",
                "protocolversion": 70016, "localservices": "0000000000000c09",
                "localrelay": True, "timeoffset": 0, "networkactive": True, "connections": 0,
                "connections_in": 0, "connections_out": 0, "networks": [],
                "relayfee": _RELAY_FEE_BTC_KVB, "incrementalfee": _RELAY_FEE_BTC_KVB,
                "localaddresses": [], "warnings": []}

    def _rpc_getindexinfo(self, index_name: str | None = None) -> dict[str, Any]:
        info = {name: {"synced": True, "best_block_height": self.height}
                for name in ("txindex", "txospenderindex")}
        return info if index_name is None else {
            k: v for k, v in info.items() if k == index_name}

    def _rpc_getrawmempool(self, verbose: bool = False, mempool_sequence: bool = False) -> Any:
        if not verbose:
            return list(self._mempool)
        return {t.txid: self._mempool_entry(t) for t in self._mempool.values()}

    def _rpc_getmempoolentry(self, txid: str) -> dict[str, Any]:
        tx = self._mempool.get(txid)
        if tx is None:
            raise RPCError(-5, "Transaction not in mempool")
        return self._mempool_entry(tx)

    def _mempool_entry(self, tx: _Tx) -> dict[str, Any]:
        return {"vsize": tx.vsize, "weight": tx.weight, "time": tx.time,
                "height": self.height, "wtxid": tx.wtxid, "fees": {"base": _btc(tx.fee)},
                "depends": sorted({t for t, _ in tx.inputs if t in self._mempool}),
                "spentby": sorted({s for n in range(len(tx.outputs))
                                   if (s := self._spender.get((tx.txid, n))) is not None}),
                "bip125-replaceable": False, "unbroadcast": False}

    def _rpc_getmempoolinfo(self) -> dict[str, Any]:
        txs = self._mempool.values()
        return {"loaded": True, "size": len(self._mempool),
                "bytes": sum(t.vsize for t in txs), "usage": sum(len(t.raw) for t in txs),
                "total_fee": _btc(sum(t.fee for t in txs)), "maxmempool": 300_000_000,
                "mempoolminfee": _RELAY_FEE_BTC_KVB, "minrelaytxfee": _RELAY_FEE_BTC_KVB,
                "incrementalrelayfee": _RELAY_FEE_BTC_KVB, "unbroadcastcount": 0,
                "fullrbf": True}

    def _rpc_getrawtransaction(self, txid: str, verbose: int | bool = 0,
                               blockhash: str | None = None) -> Any:
        tx = self._txs.get(txid)
        if tx is None or (blockhash is not None and self._tx_block.get(txid) is None):
            raise RPCError(-5, "No such mempool or blockchain transaction. "
                               "Use gettransaction for wallet transactions.")
        return self._tx_json(tx) if int(verbose) else tx.raw.hex()

    def _rpc_decoderawtransaction(self, hexstring: str) -> dict[str, Any]:
        return self._tx_json(self._parse_hex(hexstring), with_block=False)

    def _tx_json(self, tx: _Tx, with_block: bool = True) -> dict[str, Any]:
        embit_tx = Transaction.parse(tx.raw)
        vin: list[dict[str, Any]] = []
        for inp in embit_tx.vin:
            item: dict[str, Any]
            if tx.coinbase:
                item = {"coinbase": inp.script_sig.data.hex()}
            else:
                item = {"txid": inp.txid.hex(), "vout": inp.vout,
                        "scriptSig": {"asm": "", "hex": inp.script_sig.data.hex()}}
            if inp.witness.items:
                item["txinwitness"] = [w.hex() for w in inp.witness.items]
            item["sequence"] = inp.sequence
            vin.append(item)
        vout = []
        for n, (value, script) in enumerate(tx.outputs):
            spk: dict[str, Any] = {"asm": "", "hex": script.hex(),
                                   "type": Script(script).script_type() or (
                                       "nulldata" if script[:1] == b"\x6a" else "nonstandard")}
            address = script_to_address(script)
            if address is not None:
                spk["address"] = address
            vout.append({"value": _btc(value), "n": n, "scriptPubKey": spk})
        info: dict[str, Any] = {
            "txid": tx.txid, "hash": tx.wtxid, "version": embit_tx.version,
            "size": len(tx.raw), "vsize": tx.vsize, "weight": tx.weight,
            "locktime": embit_tx.locktime, "vin": vin, "vout": vout, "hex": tx.raw.hex(),
        }
        block = self._tx_block.get(tx.txid) if with_block else None
        if block is not None:
            info.update(blockhash=block.hash, confirmations=len(self._chain) - block.height,
                        time=block.time, blocktime=block.time)
        return info

    def _parse_hex(self, hexstring: str) -> _Tx:
        try:
            return _Tx.from_raw(bytes.fromhex(hexstring))
        except Exception:
            raise RPCError(-22, "TX decode failed") from None

    def _rpc_sendrawtransaction(self, hexstring: str, maxfeerate: Any = None,
                                maxburnamount: Any = None) -> str:
        tx = self._parse_hex(hexstring)
        if tx.txid in self._mempool:
            return tx.txid
        return self._accept(tx).txid

    def _rpc_testmempoolaccept(self, rawtxs: list[str], maxfeerate: Any = None) -> list[Any]:
        results = []
        for hexstring in rawtxs:
            tx = self._parse_hex(hexstring)
            item: dict[str, Any] = {"txid": tx.txid, "wtxid": tx.wtxid}
            if tx.txid in self._mempool:
                item.update(allowed=False, **{"reject-reason": "txn-already-in-mempool"})
            else:
                try:
                    self._accept(tx)
                except RPCError as e:
                    item.update(allowed=False, **{"reject-reason": e.message})
                else:  # a dry run: take it out again
                    self._remove_from_mempool({tx.txid})
                    item.update(allowed=True, vsize=tx.vsize, fees={"base": _btc(tx.fee)})
            results.append(item)
        return results

    def _rpc_submitpackage(self, package: list[str], maxfeerate: Any = None,
                           maxburnamount: Any = None) -> dict[str, Any]:
        results = {}
        for hexstring in package:
            tx = self._parse_hex(hexstring)
            if tx.txid not in self._mempool:
                self._accept(tx)
            results[tx.wtxid] = {"txid": tx.txid, "vsize": tx.vsize,
                                 "fees": {"base": _btc(tx.fee)}}
        return {"package_msg": "success", "tx-results": results, "replaced-transactions": []}

    def _rpc_gettxspendingprevout(self, outputs: list[dict[str, Any]],
                                  options: dict[str, Any] | None = None) -> list[Any]:
        mempool_only = bool((options or {}).get("mempool_only", False))
        results = []
        for item in outputs:
            op = (str(item["txid"]), int(item["vout"]))
            result: dict[str, Any] = {"txid": op[0], "vout": op[1]}
            spender = self._spender.get(op)
            if spender is not None:
                block = self._tx_block.get(spender)
                if block is None or not mempool_only:
                    result["spendingtxid"] = spender
                    if block is not None:
                        result["blockhash"] = block.hash
            results.append(result)
        return results

    def _rpc_estimatesmartfee(self, conf_target: int,
                              estimate_mode: str = "conservative") -> dict[str, Any]:
        if not isinstance(conf_target, int) or not 1 <= conf_target <= 1008:
            raise RPCError(-8, "Invalid conf_target, must be between 1 and 1008")
        rate = self.fee_estimate(conf_target)
        if rate is None:
            return {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
        # sat/vB -> BTC/kvB
        return {"feerate": round(rate * 1000 / _COIN, 8), "blocks": conf_target}

    # control RPCs, for a human with curl

    def _rpc_generatetoaddress(self, nblocks: int, address: str,
                               maxtries: Any = None) -> list[str]:
        return self.mine(int(nblocks), _checked_address(address))

    def _rpc_generate(self, nblocks: int = 1) -> list[str]:
        return self.mine(int(nblocks))

    def _rpc_getnewaddress(self, label: str = "", address_type: str = "bech32") -> str:
        kind = _CORE_ADDRESS_TYPES.get(address_type, address_type)
        if kind not in ADDRESS_KINDS:
            raise RPCError(-5, f"Unknown address type '{address_type}'")
        return self.new_address(kind)

    def _rpc_sendtoaddress(self, address: str, amount: Any, *_ignored: Any) -> str:
        return self.pay(_checked_address(address), _sats(amount))

    def _rpc_getbalance(self, *_ignored: Any) -> float:
        mature = 0
        for op in self._owned[self._wallet.script]:
            value, _, cb_height = self._utxo[op]
            if cb_height < 0 or self.height + 1 - cb_height >= COINBASE_MATURITY:
                mature += value
        return _btc(mature)

    def _rpc_reorg(self, depth: int, new_blocks: int | None = None,
                   drop_txids: list[str] | None = None, remine: bool = False) -> list[str]:
        return self.reorg(int(depth), new_blocks, drop_txids or (), remine=remine)

    def _rpc_evict(self, txid: str) -> list[str]:
        return self.evict(txid)

    def _rpc_doublespend(self, txid: str, address: str | None = None) -> str:
        return self.double_spend(txid, None if address is None else _checked_address(address))

    def _rpc_setfeeestimate(self, rate: Any) -> None:
        if isinstance(rate, dict):
            rate = {int(k): float(v) for k, v in rate.items()}
        self.set_fee_estimate(None if rate is None else rate if isinstance(rate, dict)
                              else float(rate))

    def _rpc_makemanytxs(self, n: int, sats: int = 10_000,
                         address: str | None = None) -> list[str]:
        return self.make_many_txs(int(n), int(sats), None if address is None
                                  else [_checked_address(address)])


def _checked_address(address: str) -> str:
    try:
        address_to_script(address)
    except ValueError:
        raise RPCError(-5, f"Invalid address: {address}") from None
    return address


def _reply(rid: Any, result: Any, error: RPCError | None) -> dict[str, Any]:
    err = None if error is None else {"code": error.code, "message": error.message}
    return {"result": result, "error": err, "id": rid}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing leaks
    block_on_close = True
    node: RegtestNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections so their handler threads can finish."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as ElectrumX's aiohttp client expects
    server: _HTTPServer

    def do_POST(self) -> None:
        node = self.server.node
        expected = "Basic " + base64.b64encode(
            f"{node._user}:{node._password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="jsonrpc"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = node._handle_http(body)
        data = json.dumps(payload, default=_json_default).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the test logs


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
