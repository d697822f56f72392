"""The watch list's queues, as the address producer relies on them: what is subscribed and
unsubscribed when watching and unwatching interleave with subscriptions in flight, and the
order of the reconcile queue. Pure: no sockets, no clock."""

from __future__ import annotations

from stream.producers.watched import WatchedAddresses
from tests.producers.scripted import ME, OTHER

THIRD = "bcrt1qthird"


def _watching(*addresses: str) -> WatchedAddresses:
    entries = WatchedAddresses()
    for address in addresses:
        assert entries.add(address, "sh-" + address) is not None
    return entries


def test_watching_again_before_the_unsubscribe_went_out_cancels_it() -> None:
    entries = _watching(ME)
    entries.subscribed(ME)
    assert entries.remove(ME)
    entries.add(ME, "sh-" + ME)
    # The server keeps the subscription; the fresh entry still asks for its status.
    assert entries.take_unsubscribe() == []
    assert entries.to_subscribe(10) == [ME]


def test_unwatching_an_address_before_it_was_subscribed_takes_it_off_the_subscribe_queue(
) -> None:
    entries = _watching(ME, OTHER)
    assert entries.remove(ME)
    assert entries.to_subscribe(10) == [OTHER]
    # Its subscribe may already be in flight: the unsubscribe is sent all the same.
    assert entries.take_unsubscribe() == ["sh-" + ME]


def test_unwatching_an_address_that_is_not_watched_changes_nothing() -> None:
    entries = _watching(ME)
    assert entries.remove(OTHER) is False
    assert entries.remove(OTHER) is False
    assert ME in entries and len(entries) == 1
    assert entries.take_unsubscribe() == []
    assert entries.to_subscribe(10) == [ME]


def test_a_subscription_answered_after_its_address_was_unwatched_is_ignored() -> None:
    entries = _watching(ME, OTHER)
    in_flight = entries.to_subscribe(10)
    assert in_flight == [ME, OTHER]
    assert entries.remove(ME)  # unwatched while the subscribe call is out
    for address in in_flight:  # what the producer does when the answer comes
        entries.subscribed(address)
    entries.subscribed(OTHER)  # told twice: still nothing to do
    assert entries.to_subscribe(10) == []
    assert entries.take_unsubscribe() == ["sh-" + ME]
    assert not entries.pending_subscriptions


def test_marking_every_address_dirty_keeps_the_dirty_ones_first_in_their_order() -> None:
    entries = _watching(ME, OTHER, THIRD)
    entries.mark_dirty([THIRD, OTHER])
    assert entries.remove(OTHER)
    entries.mark_all_dirty()
    # THIRD was waiting already and keeps its turn; ME joins in watch order; OTHER is gone.
    assert [e.address for e in entries.take_dirty(10)] == [THIRD, ME]
    assert entries.dirty_count == 0


def test_marking_every_address_dirty_with_none_watched_leaves_the_queue_empty() -> None:
    entries = WatchedAddresses()
    entries.mark_all_dirty()
    assert entries.dirty_count == 0 and entries.take_dirty(10) == []
