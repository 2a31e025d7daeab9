"""QUIC without I/O: which connection a datagram is for, and bounded aioquic connections.

aioquic's ``QuicConnection`` is already sans-IO (datagrams and the time go in, datagrams and
events come out). Two things it does not do for a server, and this module adds:

- **Routing.** A UDP socket carries every connection; :class:`QuicRouter` decides from the
  packet header alone whether a datagram belongs to a known connection, starts a new one
  (an Initial, within the half-open cap per client address), needs a Version Negotiation or
  Retry answer, or is dropped. It never touches the connection's state, so the socket's
  receive task stays a cheap router that can never wait on an application.
- **Bounded stream buffers.** aioquic doubles a stream's receive window whenever the peer has
  used half of it, whether or not anybody read the data, and accepts any amount of data to
  send. :class:`BoundedQuicConnection` ties the receive window of a request stream to what
  the application has read (credit = bytes read + ``stream_window``), and reports how many
  bytes a stream has waiting in aioquic's send buffer, not yet sent, so the trio layer can
  make ``send()`` wait. Both reach into aioquic's internals (``_streams``,
  ``sender._buffer_stop``, ``_local_max_streams_bidi``, ``_write_stream_limits``);
  pyproject caps aioquic below 2 for that reason and ``tests/http3/test_sansio_quic.py`` pins
  the behaviour.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

__all__ = [
    "Accept",
    "BoundedQuicConnection",
    "Deliver",
    "QuicRouter",
    "Reply",
    "quic_configuration",
]

Address = Any  # (host, port) or (host, port, flowinfo, scope_id), as the socket reports it


# A client's unidirectional streams: HTTP/3 needs three (control, QPACK encoder and
# decoder); the rest are ones we ignore (grease). Each carries little, so each gets a small
# window: what a client can make the server buffer on them (past a hole it leaves) stays
# a fraction of what its request streams may.
UNI_STREAMS = 16
UNI_WINDOW = 64 * 1024


def quic_configuration(
    *,
    certfile: str,
    keyfile: str | None,
    password: str | None,
    idle_timeout: float,
    stream_window: int,
    max_data: int,
) -> QuicConfiguration:
    """The server's QUIC settings: HTTP/3 ALPN, the TLS files, windows, no 0-RTT.

    0-RTT stays off because aioquic only accepts early data through session tickets, and no
    ticket handler is installed (replayable requests are not worth the round trip saved).
    """
    config = QuicConfiguration(
        alpn_protocols=list(H3_ALPN),
        is_client=False,
        idle_timeout=idle_timeout,
        max_stream_data=stream_window,
        max_data=max_data,
    )
    config.load_cert_chain(certfile, keyfile, password)
    return config


def is_request_stream(stream_id: int) -> bool:
    """A client-initiated bidirectional stream (RFC 9000 2.1): one HTTP/3 request."""
    return stream_id % 4 == 0


def is_client_uni(stream_id: int) -> bool:
    """A client-initiated unidirectional stream: control, QPACK, or one we ignore."""
    return stream_id % 4 == 2


class BoundedQuicConnection(QuicConnection):
    """A server ``QuicConnection`` whose request streams buffer a bounded amount each way."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        max_streams: int,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        # Sent in the transport parameters; aioquic then grants one more per finished stream.
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = max_streams
        self._window = configuration.max_stream_data
        uni = self._local_max_streams_uni
        uni.value = uni.sent = UNI_STREAMS
        self._uni_window = self._local_max_stream_data_uni = min(self._window, UNI_WINDOW)
        self._unread: dict[int, int] = {}  # request body bytes received, not read by the app
        # Streams whose request runs (head arrived, task not ended). Until its head arrives
        # a stream keeps its first window: frame bytes aioquic buffers (a huge HEADERS
        # frame) never earn credit.
        self._started: set[int] = set()
        self._held = 0  # stream credit aioquic would have granted that we hold back
        self._seen_limit = max_streams
        self._running_changed = False

    def start(self, stream_id: int) -> None:
        """A request head arrived on the stream: its task runs, its reads earn credit."""
        self._started.add(stream_id)
        self._running_changed = True

    # -- receiving --------------------------------------------------------------------------
    def received(self, stream_id: int, size: int) -> None:
        """``size`` body bytes of a request stream were handed to the server, unread yet."""
        self._unread[stream_id] = self._unread.get(stream_id, 0) + size

    def consumed(self, stream_id: int, size: int) -> None:
        """The app read ``size`` body bytes: the peer may send that much more."""
        left = self._unread.get(stream_id, 0) - size
        if left > 0:
            self._unread[stream_id] = left
        else:
            self._unread.pop(stream_id, None)

    def forget(self, stream_id: int) -> None:
        """The stream's request is over: its unread bytes no longer hold the window."""
        self._unread.pop(stream_id, None)
        self._started.discard(stream_id)
        self._running_changed = True

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        """Grant a new request stream only for one whose handler has ended.

        aioquic grants one (MAX_STREAMS) as soon as a stream is finished at the QUIC level,
        which can be before its handler has returned (a reset stream's app has a grace
        period). Here the credit of a finished stream whose task still runs is held back,
        so ``h3_max_concurrent_streams`` bounds running handlers, reset ones included.
        """
        limit = self._local_max_streams_bidi
        if limit.value != self._seen_limit or self._running_changed:
            granted = limit.value + self._held  # what aioquic alone would allow
            lingering = sum(1 for sid in self._started if sid not in self._streams)
            value = max(limit.sent, granted - lingering)
            self._held = granted - value
            limit.value = self._seen_limit = value
            self._running_changed = False
        super()._write_connection_limits(builder, space)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        """Credit a request stream by what was read, not by what arrived.

        aioquic's own rule doubles the window once the peer has sent half of it. Here the
        window ends ``stream_window`` bytes past what the app has read (frame headers count
        as read), so a client can never have more than that waiting unread per stream.
        An update goes out once a quarter of a window has been read, not on every read.
        The client's unidirectional streams (control, QPACK) follow the same rule with
        :data:`UNI_WINDOW`, everything delivered counting as read (the H3 layer consumes
        it at once).
        """
        stream_id = stream.stream_id
        if stream_id is None or not (is_request_stream(stream_id) or is_client_uni(stream_id)):
            super()._write_stream_limits(builder, space, stream)
            return
        if stream.receiver.is_finished or (
            is_request_stream(stream_id) and stream_id not in self._started
        ):
            return
        # Bytes delivered in order, not the highest offset seen: data past a gap waits in
        # aioquic's buffer and must not earn credit (a client leaving a hole could
        # otherwise grow the window, and that buffer, without bound).
        window = self._window if is_request_stream(stream_id) else self._uni_window
        delivered = stream.receiver.starting_offset()
        credit = delivered - self._unread.get(stream_id, 0) + window
        if credit - stream.max_stream_data_local < window // 4:
            return
        stream.max_stream_data_local = credit
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=17,  # type + two varints
            handler=self._on_max_stream_data_delivery,
            handler_args=(stream,),
        )
        buf.push_uint_var(stream_id)
        buf.push_uint_var(credit)
        stream.max_stream_data_local_sent = credit

    # -- sending ----------------------------------------------------------------------------
    def send_backlog(self, stream_id: int) -> int:
        """Bytes written to a stream and not yet put on the wire (0 if the stream is gone).

        Bytes sent but not yet acknowledged are not counted: the congestion window (and the
        peer's flow-control window) bounds those. Counting them would cap a stream at
        bound / (RTT + the peer's ACK delay), about 10 MiB/s for 256 KiB on loopback.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return max(0, sender._buffer_stop - sender.highest_offset)

    def stop_receiving(self, stream_id: int, error_code: int) -> None:
        """STOP_SENDING, unless the stream's receiving side is already over or gone."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            self.stop_stream(stream_id, error_code)

    def responses_delivered(self) -> bool:
        """Every request stream's response was acknowledged (or its reset was): closing
        the connection now loses nothing. aioquic sends no stream data once closing."""
        return all(
            stream.sender.is_finished
            for stream_id, stream in self._streams.items()
            if is_request_stream(stream_id)
        )

    def can_send(self, stream_id: int) -> bool:
        """Whether data may still be written to the stream (not reset, not stopped)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        sender = stream.sender
        return sender._reset_error_code is None and sender._buffer_fin is None


# -- routing -----------------------------------------------------------------------------

H = TypeVar("H")


@dataclass(slots=True)
class Deliver(Generic[H]):
    """The datagram belongs to a known connection."""

    handle: H


@dataclass(slots=True)
class Reply:
    """Answer the sender with this datagram (Version Negotiation or Retry) and stop there."""

    data: bytes


@dataclass(slots=True)
class Accept:
    """A new connection: register it with :meth:`QuicRouter.register`, then deliver to it."""

    quic: BoundedQuicConnection
    cids: tuple[bytes, ...]


class QuicRouter(Generic[H]):
    """Connection IDs to connections for one UDP socket, and the rules for new ones.

    ``half_open`` counts handshakes in progress per client IP: an address at the cap gets
    its new Initials dropped (the client retries; established connections are unaffected).
    ``open`` counts its established connections: an address whose half-open and
    established connections together reach ``max_per_ip`` gets its Initials dropped too,
    so idle connections from one address (each ~100 KB) cannot pile up.
    ``retry`` is ``on``, ``off`` or ``load`` (Retry only while more than ``retry_threshold``
    handshakes are in progress), so a flood of spoofed Initials costs a stateless Retry each
    instead of a connection each.
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        *,
        max_streams: int,
        max_half_open: int,
        max_per_ip: int = 64,
        retry: str = "load",
        retry_threshold: int = 64,
        accepting: bool = True,
    ) -> None:
        self.configuration = configuration
        self.max_streams = max_streams
        self.max_half_open = max_half_open
        self.max_per_ip = max_per_ip
        self.retry = retry
        self.retry_threshold = retry_threshold
        self.accepting = accepting
        self.connections: dict[bytes, H] = {}
        self.half_open: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self._tokens = QuicRetryTokenHandler()

    @property
    def half_open_total(self) -> int:
        return sum(self.half_open.values())

    def route(self, data: bytes, addr: Address, now: float) -> Deliver[H] | Reply | Accept | None:
        """Decide what one datagram is; None means drop it."""
        config = self.configuration
        try:
            header = pull_quic_header(Buffer(data=data), config.connection_id_length)
        except ValueError:
            return None
        handle = self.connections.get(header.destination_cid)
        if handle is not None:
            return Deliver(handle)
        if (
            header.version is not None
            and header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version not in config.supported_versions
        ):
            return Reply(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                )
            )
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            or not self.accepting
            or self.half_open[addr[0]] >= self.max_half_open
            or self.half_open[addr[0]] + self.open[addr[0]] >= self.max_per_ip
        ):
            return None
        return self._initial(header, addr, now)

    def _initial(self, header: Any, addr: Address, now: float) -> Reply | Accept | None:
        original_cid: bytes = header.destination_cid
        retry_cid: bytes | None = None
        if header.token:
            try:
                original_cid = self._tokens.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=now,
                )
            except ValueError:
                return None  # a forged or stale token: drop (RFC 9000 8.1.3 allows it)
            retry_cid = header.destination_cid
        elif self._wants_retry():
            source_cid = os.urandom(self.configuration.connection_id_length)
            token = self._tokens.create_token(
                address=addr,
                original_destination_connection_id=header.destination_cid,
                retry_source_connection_id=source_cid,
                now=now,
            )
            return Reply(
                encode_quic_retry(
                    version=header.version,
                    source_cid=source_cid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=token,
                )
            )
        quic = BoundedQuicConnection(
            configuration=self.configuration,
            max_streams=self.max_streams,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
        )
        return Accept(quic, (header.destination_cid, quic.host_cid))

    def _wants_retry(self) -> bool:
        if self.retry == "on":
            return True
        return self.retry == "load" and self.half_open_total >= self.retry_threshold

    def register(self, cids: tuple[bytes, ...], handle: H, addr: Address) -> None:
        """A new connection starts its handshake."""
        for cid in cids:
            self.connections[cid] = handle
        self.half_open[addr[0]] += 1

    def established(self, addr: Address) -> None:
        """A handshake finished: the connection counts as open, no longer half-open."""
        _decrement(self.half_open, addr[0])
        self.open[addr[0]] += 1

    def closed(self, addr: Address, established: bool) -> None:
        """A connection ended (a failed handshake, if not ``established``)."""
        _decrement(self.open if established else self.half_open, addr[0])

    def add_cid(self, cid: bytes, handle: H) -> None:
        self.connections[cid] = handle

    def remove_cid(self, cid: bytes) -> None:
        self.connections.pop(cid, None)

    def remove(self, cids: set[bytes]) -> None:
        for cid in cids:
            self.connections.pop(cid, None)


def _decrement(counter: Counter[str], host: str) -> None:
    if counter[host] <= 1:
        counter.pop(host, None)
    else:
        counter[host] -= 1
