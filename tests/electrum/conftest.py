"""Fixtures for the pool tests: transactions the bed's ElectrumX servers know."""

from __future__ import annotations

import pytest

from tests.bed.electrumx import ElectrumXServer
from tests.bed.node import RegtestNode


@pytest.fixture(scope="module")
def mined_txids(regtest_node: RegtestNode) -> list[str]:
    """300 confirmed payment transactions (one block)."""
    txids = regtest_node.make_many_txs(300)
    regtest_node.mine(1)
    return txids


@pytest.fixture
def known_txids(
    mined_txids: list[str], electrumx_servers: list[ElectrumXServer], wait_for_tip: object
) -> list[str]:
    """``mined_txids``, once every bed server has indexed their block."""
    wait_for_tip()  # type: ignore[operator]
    return mined_txids
