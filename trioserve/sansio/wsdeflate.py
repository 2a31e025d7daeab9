"""permessage-deflate (RFC 7692) that never inflates past the message size limit.

wsproto's ``PerMessageDeflate`` inflates each frame in one ``decompress`` call with no
output limit, so ~16 KB of deflated zeros becomes 16 MiB in memory before anyone can look
at the size (a decompression bomb). :class:`BoundedDeflate` inflates with zlib's
``max_length`` set to what is left of ``websocket_max_message_size`` for the message: it
never produces more than one byte over the limit, and a message that would be larger fails
the frame with 1009 (MESSAGE_TOO_BIG), which wsproto turns into a close with that code.

It reads wsproto's per-message state (``_inbound_compressed``, ``_inbound_is_compressible``,
``_decompressor``), which ``frame_inbound_header`` keeps as before;
tests/sansio/test_wsdeflate.py checks the result against wsproto's own extension.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol

from .events import Headers

# What ends every deflated message on the wire, removed by the sender (RFC 7692 7.2.2).
_TAIL = b"\x00\x00\xff\xff"


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inbound side stops at ``max_size`` bytes per message."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._inflated = 0  # bytes of the current message inflated so far

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        room = self.max_size - self._inflated
        try:
            # At most room + 1 bytes: one over the limit is enough to know it is too big.
            out = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible:
            # A control frame (wsproto forgets the message's compression here too): the
            # message's count goes on.
            self._inbound_compressed = None
            return None
        compressed = self._inbound_compressed
        self._inbound_compressed = None
        if not compressed:
            self._inflated = 0
            return None
        out = self._inflate(_TAIL)
        self._inflated = 0
        if self.client_no_context_takeover:  # we are the server: the client's setting
            self._decompressor = None
        return out


def negotiate_deflate(headers: Headers, max_size: int) -> tuple[BoundedDeflate, bytes] | None:
    """Accept the first acceptable permessage-deflate offer: (extension, response value).

    The extension inflates at most ``max_size`` bytes per message (see module doc).
    """
    for key, value in headers:
        if key != b"sec-websocket-extensions":
            continue
        for offer in value.decode("latin-1").split(","):
            name = offer.split(";", 1)[0].strip().lower()
            if name != BoundedDeflate.name:
                continue
            ext = BoundedDeflate(max_size)
            accepted = ext.accept(offer.strip())
            if accepted is None or accepted is False:
                continue
            response = BoundedDeflate.name
            if isinstance(accepted, str) and accepted:
                response += "; " + accepted
            return ext, response.encode("latin-1")
    return None
