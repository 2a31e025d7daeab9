"""The request-body state machine, driven synchronously."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
    assert body.state == COMPLETE
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


def test_wait_budget_counts_only_waiting_and_is_earned_by_bytes() -> None:
    body = RequestBody(None, expects_continue=False)
    assert body.wait_budget(None, 500) is None
    assert body.wait_budget(20.0, 500) == 20.0
    body.on_piece((b"x" * 1000, True))  # 1000 bytes at 500 B/s earn 2 s
    body.waited = 5.0
    assert body.wait_budget(20.0, 500) == 17.0
    body.waited = 30.0
    assert body.wait_budget(20.0, 500) == 0.0
    assert body.wait_budget(20.0, 0) == 0.0  # no rate: a fixed total


def test_timeout_is_a_disconnect_then_408_state() -> None:
    body = RequestBody(None, expects_continue=False)
    assert body.on_timeout() == {"type": "http.disconnect"}
    assert body.timed_out
    body.finish()
    assert body.timed_out  # the runner still answers 408 after the app returns


@given(
    pieces=st.lists(st.binary(max_size=20), max_size=8),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=100)),
)
def test_any_split_gives_the_body_or_one_disconnect_at_the_limit(
    pieces: list[bytes], limit: int | None
) -> None:
    body = RequestBody(limit, expects_continue=False)
    received = b""
    total = 0
    for index, data in enumerate(pieces):
        more = index < len(pieces) - 1
        message = body.on_piece((data, more))
        total += len(data)
        if limit is not None and total > limit:
            assert message == {"type": "http.disconnect"}
            assert body.too_large
            return
        assert message["type"] == "http.request" and message["more_body"] is more
        received += message["body"]
    assert received == b"".join(pieces)
    assert body.state == (COMPLETE if pieces else READ)
