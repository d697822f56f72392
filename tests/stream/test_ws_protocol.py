"""The WebSocket client messages: every bad input gets a code and a reason."""

from __future__ import annotations

import orjson
import pytest

from stream.electrum.validate import address_to_script
from stream.transports.ws_protocol import (
    Ping,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def regtest_address(address: str) -> str:
    address_to_script(address, "regtest")
    return address.lower() if address.lower().startswith("bcrt1") else address


def parse(raw: str | bytes) -> object:
    return parse_client_message(raw, regtest_address)


def error_code(raw: str) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    return caught.value.code


def test_subscribe_with_everything() -> None:
    command = parse(
        orjson.dumps({"op": "subscribe", "types": ["address", "block"],
                      "addresses": [ADDRESS, ADDRESS.upper()], "min_sats": 5, "resume_from": 42})
    )
    assert command == Subscribe(frozenset({"address", "block"}), (ADDRESS,), 5, 42, None)


def test_ping_and_unsubscribe() -> None:
    assert parse(b'{"op":"ping"}') == Ping()
    assert parse(orjson.dumps({"op": "unsubscribe", "addresses": [ADDRESS]})) == Unsubscribe(
        None, (ADDRESS,)
    )


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{nope", "bad_json"),
        ("[1,2]", "bad_request"),
        ('{"types":[]}', "bad_request"),
        ('{"op":"dance"}', "unknown_op"),
        ('{"op":"subscribe","types":["blocks"]}', "unknown_type"),
        ('{"op":"subscribe","types":"block"}', "bad_request"),
        ('{"op":"subscribe","min_sats":-1}', "bad_request"),
        ('{"op":"subscribe","resume_from":"7"}', "bad_request"),
        ('{"op":"subscribe","addresses":["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]}',
         "invalid_address"),
    ],
)
def test_bad_messages_get_an_error_code(raw: str, code: str) -> None:
    assert error_code(raw) == code


def test_invalid_address_error_names_the_address_and_why() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse('{"op":"subscribe","addresses":["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]}')
    assert "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq" in caught.value.message
    assert "not a regtest address" in caught.value.message
