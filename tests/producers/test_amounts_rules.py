"""What a transaction does to an address (every input that spends the address counts), and
the transaction cache: one answer per txid asked, what it keeps, and what it logs about an
answer it cannot use."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import pytest
from embit.networks import NETWORKS
from embit.script import Script
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from stream.electrum.errors import ServerError
from stream.producers.address_diff import TxChange
from stream.producers.amounts import TxCache, amounts_of, price, sent_sats
from stream.producers.txparse import parse_tx

LOGGER = "stream.producers.amounts"
ME = str(Script(b"\x00\x14" + b"\x01" * 20).address(NETWORKS["regtest"]))
OTHER = str(Script(b"\x00\x14" + b"\x02" * 20).address(NETWORKS["regtest"]))
PROGRAMS = {ME: b"\x01" * 20, OTHER: b"\x02" * 20}
SOMEONE = "e" * 64


def raw_tx(spends: Sequence[tuple[str, int]], pays: Sequence[tuple[str, int]]) -> str:
    """A real (unsigned) transaction spending ``spends`` and paying ``pays``."""
    tx = Transaction(
        vin=[TransactionInput(bytes.fromhex(txid), vout) for txid, vout in spends],
        vout=[TransactionOutput(value, Script(b"\x00\x14" + PROGRAMS[address]))
              for address, value in pays],
    )
    return str(tx.serialize().hex())


def txid_of(raw: str) -> str:
    return parse_tx(raw, "regtest").txid


# Two fundings pay ME three times in all; the spend takes all three and one of OTHER's.
FUND_1 = raw_tx([(SOMEONE, 0)], [(ME, 30_000), (OTHER, 4_000), (ME, 2_000)])
FUND_2 = raw_tx([(SOMEONE, 1)], [(ME, 500)])
SPEND = raw_tx([(txid_of(FUND_1), 0), (txid_of(FUND_2), 0), (txid_of(FUND_1), 2),
                (txid_of(FUND_1), 1)], [(OTHER, 30_000), (ME, 1_000)])
ID_1, ID_2, SPEND_ID = txid_of(FUND_1), txid_of(FUND_2), txid_of(SPEND)


def test_every_input_spending_the_address_adds_to_what_it_sent() -> None:
    prevs = {ID_1: parse_tx(FUND_1, "regtest"), ID_2: parse_tx(FUND_2, "regtest")}
    spend = parse_tx(SPEND, "regtest")
    assert sent_sats(spend, ME, prevs) == 30_000 + 500 + 2_000
    assert sent_sats(spend, OTHER, prevs) == 4_000
    assert amounts_of(spend, ME, prevs) == (1_000, 32_500)
    # Only the prevs that are known count: without FUND_2, its 500 is not counted.
    assert sent_sats(spend, ME, {ID_1: prevs[ID_1]}) == 32_000


def test_price_goes_on_past_a_transaction_already_priced() -> None:
    parsed = {t: parse_tx(r, "regtest") for t, r in
              [(ID_1, FUND_1), (ID_2, FUND_2), (SPEND_ID, SPEND)]}
    amounts = {ID_1: (1, 1)}  # priced in an earlier round: kept as it is
    changes = [TxChange(ID_1, "confirmed", 3, 1), TxChange(ID_2, "confirmed", 3, 1),
               TxChange(SPEND_ID, "mempool", 0, 0)]
    price(amounts, ME, changes, {ID_1: 3, ID_2: 3, SPEND_ID: 0}, parsed)
    assert amounts == {ID_1: (1, 1), ID_2: (500, 0), SPEND_ID: (1_000, 32_500)}


class Source:
    """A scripted pool: answers ``raws`` for what is asked (or a fixed, wrong-length list)."""

    def __init__(self, raws: dict[str, str | ServerError],
                 answer: list[str | ServerError] | None = None) -> None:
        self.raws = raws
        self.answer = answer

    async def get_transactions_batch(self, txids: Iterable[str]
                                     ) -> Sequence[str | ServerError]:
        wanted = list(txids)
        return self.answer if self.answer is not None else [self.raws[t] for t in wanted]


@pytest.mark.anyio
async def test_the_cache_holds_each_transaction_parsed() -> None:
    cache = TxCache(Source({ID_1: FUND_1, ID_2: FUND_2}), "regtest")
    await cache.fetch([ID_2, ID_1])
    assert cache[ID_1] == parse_tx(FUND_1, "regtest")
    assert cache[ID_2] == parse_tx(FUND_2, "regtest")
    assert len(cache) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [[FUND_1], [FUND_1, FUND_2, SPEND]])
async def test_an_answer_of_another_length_than_the_question_is_an_error(
        answer: list[str | ServerError]) -> None:
    # Pairing answers with txids by position is only right when there is one per txid.
    cache = TxCache(Source({}, answer), "regtest")
    with pytest.raises(ValueError):
        await cache.fetch([ID_1, ID_2])


@pytest.mark.anyio
async def test_what_the_cache_cannot_use_is_logged_with_the_txid_and_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    missing, garbled = "a" * 64, "b" * 64
    cache = TxCache(Source({missing: ServerError(2, "no such transaction"),
                            garbled: "zz", ID_1: FUND_2}), "regtest")
    await cache.fetch([missing, garbled, ID_1])
    assert len(cache) == 0
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert records[0] == (logging.INFO, f"transaction {missing} not available: "
                                        f"{ServerError(2, 'no such transaction')}")
    level, message = records[1]
    assert level == logging.WARNING
    assert message.startswith(f"transaction {garbled} from the server does not parse: ")
    assert "not a raw transaction" in message  # the parser's reason, not None
    assert records[2] == (logging.WARNING,
                          f"server answered transaction {ID_2} for {ID_1}; ignored")
    assert len(records) == 3
