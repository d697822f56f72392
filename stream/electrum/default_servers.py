"""Curated public Electrum servers per network, used when CHAINWIRE_SERVERS is not set.

Taken from the Electrum wallet's bundled server lists: TLS ports only, DNS names only
(no .onion, no bare IPs), long-running operators first. Public servers present
self-signed certificates as often as not; the pool accepts them, as the Electrum wallet
does. Regtest has no public servers: CHAINWIRE_SERVERS is required there.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SERVERS", "NETWORKS"]

NETWORKS: tuple[str, ...] = ("mainnet", "testnet", "testnet4", "signet", "regtest")

DEFAULT_SERVERS: dict[str, tuple[str, ...]] = {
    "mainnet": (
        "ssl://electrum.blockstream.info:50002",
        "ssl://electrum.emzy.de:50002",
        "ssl://electrum.bitaroo.net:50002",
        "ssl://fortress.qtornado.com:443",
        "ssl://electrum.qtornado.com:50002",
        "ssl://bitcoin.aranguren.org:50002",
        "ssl://electrum.jhoenicke.de:50002",
        "ssl://electrum.hodlister.co:50002",
        "ssl://electrum3.hodlister.co:50002",
        "ssl://electrum5.hodlister.co:50002",
        "ssl://btc.electroncash.dk:60002",
        "ssl://blackie.c3-soft.com:57002",
        "ssl://bitcoin.lu.ke:50002",
        "ssl://electrum.diynodes.com:50022",
        "ssl://fulcrum.grey.pw:51002",
        "ssl://fulcrum.sethforprivacy.com:50002",
        "ssl://e.keff.org:50002",
        "ssl://e2.keff.org:50002",
        "ssl://electrumx.erbium.eu:50002",
        "ssl://electrum.dcn.io:50002",
        "ssl://electrum.pabu.io:50002",
        "ssl://btc.ocf.sh:50002",
        "ssl://bitcoins.sk:56002",
        "ssl://2electrumx.hopto.me:56022",
        "ssl://xtrum.com:50002",
        "ssl://electrumx.schulzemic.net:50002",
        "ssl://elx.bitske.com:50002",
        "ssl://hodlers.beer:50002",
        "ssl://kareoke.qoppa.org:50002",
        "ssl://tardis.bauerj.eu:50002",
        "ssl://blockstream.info:700",
        "ssl://electrum.hsmiths.com:50002",
    ),
    "testnet": (
        "ssl://electrum.blockstream.info:60002",
        "ssl://testnet.aranguren.org:51002",
        "ssl://testnet.qtornado.com:51002",
        "ssl://blackie.c3-soft.com:57006",
        "ssl://blockstream.info:993",
        "ssl://v22019051929289916.bestsrv.de:50002",
    ),
    "testnet4": (
        "ssl://mempool.space:40002",
        "ssl://testnet4-electrumx.wakiyamap.dev:51002",
        "ssl://blackie.c3-soft.com:57010",
    ),
    "signet": (
        "ssl://mempool.space:60602",
        "ssl://signet-electrumx.wakiyamap.dev:50002",
        "ssl://electrum.emzy.de:53002",
    ),
    "regtest": (),
}
