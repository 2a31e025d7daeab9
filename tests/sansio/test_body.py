"""The request-body state machine, driven synchronously."""

from __future__ import annotations

from trioserve.sansio.body import (
    COMPLETE,
    GONE,
    READ,
    SEND_CONTINUE,
    TOO_LARGE,
    WAIT_FOR_DISCONNECT,
    RequestBody,
)


def test_pieces_become_messages_until_the_end() -> None:
    body = RequestBody(None, expects_continue=False)
    assert body.action() == READ
    assert body.on_piece((b"ab", True)) == {
        "type": "http.request",
        "body": b"ab",
        "more_body": True,
    }
    assert body.action() == READ
    assert body.on_piece((b"c", False)) == {
        "type": "http.request",
        "body": b"c",
        "more_body": False,
    }
    assert body.complete
    assert body.action() == WAIT_FOR_DISCONNECT
    assert body.on_disconnect() == {"type": "http.disconnect"}
    assert body.state == GONE


def test_continue_is_owed_once_then_reading() -> None:
    body = RequestBody(None, expects_continue=True)
    assert body.action() == SEND_CONTINUE
    body.continue_handled()
    assert body.action() == READ
    body.continue_handled()  # idempotent
    assert body.action() == READ


def test_limit_counts_every_piece() -> None:
    body = RequestBody(5, expects_continue=False)
    assert body.on_piece((b"abc", True))["type"] == "http.request"
    assert body.on_piece((b"de", True))["type"] == "http.request"  # exactly at the limit
    assert body.on_piece((b"f", False)) == {"type": "http.disconnect"}
    assert body.too_large
    assert body.state == TOO_LARGE
    body.on_disconnect()
    body.finish()
    assert body.too_large  # the 413 verdict survives the end of the request


def test_a_cut_body_is_a_disconnect() -> None:
    body = RequestBody(None, expects_continue=False)
    assert body.on_piece(None) == {"type": "http.disconnect"}
    assert body.state == GONE
    assert body.action() not in (READ, SEND_CONTINUE, WAIT_FOR_DISCONNECT)


def test_skipped_body_reads_as_complete() -> None:
    body = RequestBody(None, expects_continue=True, skip=True)
    assert body.state == COMPLETE


def test_finish_makes_every_later_receive_a_disconnect() -> None:
    body = RequestBody(None, expects_continue=False)
    body.finish()
    assert body.state == GONE
    assert body.action() not in (READ, SEND_CONTINUE, WAIT_FOR_DISCONNECT)


def test_each_message_is_a_fresh_dict() -> None:
    """An app may mutate what receive() gave it; the next answer must not change."""
    body = RequestBody(None, expects_continue=False)
    first = body.on_piece((b"", False))
    first["body"] = b"mutated"
    assert body.on_disconnect() is not body.on_disconnect()
