"""What a WebSocket client gets back for each message it sends, good or bad."""

from __future__ import annotations

import orjson
import pytest

from batcher.events import EVENT_TYPES
from stream.transports.ws_protocol import (
    ClientCommand,
    ProtocolError,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
KNOWN_TYPES = "address, block, fees, reorg, server, tx.large"


def lower_case_address(address: str) -> str:
    """A stand-in for the server's validator: any string is fine unless it says "bad"."""
    if "bad" in address:
        raise ValueError(f"{address!r} is not a regtest address")
    return address.lower()


def parse(message: object) -> ClientCommand:
    raw = message if isinstance(message, str) else orjson.dumps(message)
    return parse_client_message(raw, lower_case_address)


def refused(message: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse(message)
    return caught.value


def test_an_error_goes_back_to_the_client_as_an_error_op() -> None:
    error = refused({"op": "dance"})
    assert error.to_message() == {
        "op": "error",
        "code": "unknown_op",
        "message": "unknown op 'dance'; expected subscribe, unsubscribe or ping",
    }
    assert str(error) == error.message  # what the server logs is what the client reads


@pytest.mark.parametrize(("message", "code", "text"), [
    ("{nope", "bad_json", "message is not valid JSON"),
    ("[1, 2]", "bad_request", 'message must be a JSON object with an "op"'),
    ({"types": []}, "bad_request", 'message has no "op"'),
    ({"op": "subscribe", "types": "block"}, "bad_request", '"types" must be a list of strings'),
    ({"op": "subscribe", "types": [1]}, "bad_request", '"types" must be a list of strings'),
    ({"op": "subscribe", "addresses": ADDRESS}, "bad_request",
     '"addresses" must be a list of strings'),
    ({"op": "unsubscribe", "addresses": [ADDRESS, 7]}, "bad_request",
     '"addresses" must be a list of strings'),
    ({"op": "subscribe", "min_sats": -1}, "bad_request",
     '"min_sats" must be a non-negative integer'),
    ({"op": "subscribe", "min_sats": True}, "bad_request",
     '"min_sats" must be a non-negative integer'),
    ({"op": "subscribe", "resume_from": 1.5}, "bad_request",
     '"resume_from" must be a non-negative integer'),
    ({"op": "subscribe", "epoch": 3}, "bad_request", '"epoch" must be a string'),
    ({"op": "subscribe", "types": ["blocks"]}, "unknown_type",
     f"unknown event type 'blocks'; expected some of {KNOWN_TYPES}"),
    ({"op": "subscribe", "addresses": ["bad1"]}, "invalid_address",
     "'bad1' is not a regtest address"),
])
def test_each_bad_message_gets_its_code_and_a_message_saying_what_is_wrong(
    message: object, code: str, text: str,
) -> None:
    error = refused(message)
    assert (error.code, error.message) == (code, text)


def test_an_unknown_op_or_type_is_quoted_cut_to_40_characters() -> None:
    long_name = "x" * 39 + "yz"
    assert refused({"op": long_name}).message == (
        f"unknown op '{long_name[:40]}'; expected subscribe, unsubscribe or ping")
    assert refused({"op": 12345}).message.startswith("unknown op '12345';")
    assert refused({"op": "subscribe", "types": ["block", long_name]}).message == (
        f"unknown event type '{long_name[:40]}'; expected some of {KNOWN_TYPES}")


def test_the_unknown_type_message_lists_every_event_type() -> None:
    message = refused({"op": "subscribe", "types": ["nope"]}).message
    assert message.rpartition("expected some of ")[2].split(", ") == sorted(EVENT_TYPES)


def test_a_bare_subscribe_means_everything_from_now() -> None:
    assert parse({"op": "subscribe"}) == Subscribe(None, (), None, None, None)


def test_subscribe_carries_the_resume_point_and_its_epoch() -> None:
    command = parse({"op": "subscribe", "resume_from": 41, "epoch": "ep-2"})
    assert command == Subscribe(None, (), None, 41, "ep-2")
    assert parse({"op": "subscribe", "epoch": None}) == Subscribe(None, (), None, None, None)


def test_zero_is_a_valid_min_sats_and_resume_point() -> None:
    assert parse({"op": "subscribe", "min_sats": 0, "resume_from": 0}) == Subscribe(
        None, (), 0, 0, None)


def test_types_alone_subscribe_to_those_types_at_every_address() -> None:
    assert parse({"op": "subscribe", "types": ["block", "fees", "block"]}) == Subscribe(
        frozenset({"block", "fees"}), (), None, None, None)


def test_an_empty_type_list_is_kept_apart_from_no_type_list() -> None:
    command = parse({"op": "subscribe", "types": []})
    assert isinstance(command, Subscribe) and command.types == frozenset()


def test_addresses_come_back_canonical_once_each_in_the_order_given() -> None:
    command = parse({"op": "subscribe", "addresses": ["B", "a", "b", "A", "c"]})
    assert isinstance(command, Subscribe) and command.addresses == ("b", "a", "c")


def test_unsubscribe_names_types_and_addresses() -> None:
    assert parse({"op": "unsubscribe", "types": ["tx.large"], "addresses": ["X"]}) == (
        Unsubscribe(frozenset({"tx.large"}), ("x",)))
    assert parse({"op": "unsubscribe"}) == Unsubscribe(None, ())
    assert refused({"op": "unsubscribe", "types": ["nope"]}).code == "unknown_type"
