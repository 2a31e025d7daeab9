"""h2 made cheaper where a server pays most: repeated header blocks, and the memory of idle
connections (h2, hpack and hyperframe are pure Python; a hello's HEADERS cost about as much
as the rest of its request, and h2's settings were a third of an idle connection).

**Responses** (:class:`StaticEncoder`) are encoded without a dynamic table, so their encodings
can be cached.

An HPACK encoder that inserts into the dynamic table (hpack's, by default) makes each block
depend on every block before it on the connection: the same response head encodes
differently each time, and the encoder costs about a tenth of an HTTP/2 hello in pure
Python. This one uses only the static table and literals *without indexing* (RFC 7541
6.2.2; *never indexed*, 6.2.3, for credentials), so the decoder's dynamic table stays empty
and a field always encodes to the same bytes. A field's encoding is then a function of the
field alone, kept in one process-wide cache shared by every connection: a response head
the app sends again costs a dictionary look-up per field.

The price is size: a repeated ``content-type: text/plain`` is 9 bytes (Huffman) instead of
the 1 of an indexed entry, a few dozen bytes per response, far below a TCP segment.

The one state is a table size change: when the peer lowers SETTINGS_HEADER_TABLE_SIZE
(h2 sets :attr:`StaticEncoder.header_table_size`), the next block starts with a dynamic
table size update to 0 (RFC 7541 4.2, 6.3), which is always within the peer's limit.

**Requests** (:class:`RepeatDecoder`): a client sends much the same head again and again,
and after the first one its block is mostly references into the dynamic table. A block that
left the table as it was (no insertion, no size update) decodes to the same list as long as
the table is unchanged, so the last such block is remembered with the table's state and
answered again without decoding. The table is unchanged exactly when its newest entry is the
same object and its length the same: entries are only added at the front (always a new
tuple, kept alive here so its identity cannot be reused) and dropped from the back.

**Settings** (:func:`compact_settings`): h2 keeps each setting's value, then the values
sent but not yet acknowledged, in a ``collections.deque`` (about 600 bytes even for one
value); seven settings each way made about 9 KiB per connection. A one-item list does the
same job in 64 bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from h2.settings import Settings
from hpack import Decoder, HeaderTuple
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

__all__ = ["RepeatDecoder", "StaticEncoder", "compact_settings", "encode_field"]

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
# RFC 7541 appendix A: (name, value) -> index, and name -> its first index.
_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, _field in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_FIELDS.setdefault(_field, _index)
    _STATIC_NAMES.setdefault(_field[0], _index)
# Credentials are sent "never indexed" (RFC 7541 7.1.3) and kept out of the cache.
_SENSITIVE = frozenset((b"authorization", b"proxy-authorization", b"set-cookie"))
# The cache is emptied when it reaches this many fields; longer values are not kept (a
# unique ID or URL per response would only fill it). At most about 1.5 MiB per process.
_CACHE_LIMIT = 2048
_CACHE_VALUE_LIMIT = 256
_TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update to 0 (001 prefix, value 0)
_cache: dict[tuple[bytes, bytes], bytes] = {}


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: ``value`` in a ``prefix_bits`` prefix, ``first`` its octet's high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """RFC 7541 5.2: Huffman-coded when that is shorter."""
    coded = _HUFFMAN.encode(data)
    if len(coded) < len(data):
        return _integer(len(coded), 7, 0x80) + coded
    return _integer(len(data), 7, 0) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field as a static index or a literal that leaves the dynamic table alone."""
    index = _STATIC_FIELDS.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)  # 6.1 indexed
    first = 0x10 if name in _SENSITIVE else 0x00  # 6.2.3 never indexed / 6.2.2 without
    name_index = _STATIC_NAMES.get(name)
    if name_index is not None:
        return _integer(name_index, 4, first) + _string(value)
    return bytes((first,)) + _string(name) + _string(value)


class StaticEncoder:
    """Stands in for hpack's ``Encoder`` inside h2 (``H2Connection.encoder``): h2 calls
    :meth:`encode` for every header block and sets :attr:`header_table_size` when the
    peer's SETTINGS_HEADER_TABLE_SIZE changes."""

    __slots__ = ("_size", "_size_changed")

    def __init__(self) -> None:
        self._size = 4096  # the peer's limit; our table is always empty
        self._size_changed = False

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._size:
            self._size = value
            self._size_changed = True

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = _cache
        parts = [_TABLE_SIZE_ZERO] if self._size_changed else []
        self._size_changed = False
        for field in headers:
            coded = cache.get(field)
            if coded is None:
                name, value = field
                coded = encode_field(name, value)
                if name not in _SENSITIVE and len(value) <= _CACHE_VALUE_LIMIT:
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[(name, value)] = coded
            parts.append(coded)
        return b"".join(parts)


class RepeatDecoder(Decoder):
    """hpack's decoder, answering a repeat of the last block that left the table alone from
    memory (see the module docstring); ``h2`` uses it as ``H2Connection.decoder``."""

    def __init__(self) -> None:
        super().__init__()
        # (block, the table's newest entry, its length, its size limit now, the limits in
        # force, the headers): what a block decodes to is a function of all of these (the
        # table's size limit decides what a block's insertions evict, and so which indices
        # it may then use).
        self._last: tuple[bytes, object, int, int, int, int, list[HeaderTuple]] | None = None

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        table = self.header_table
        entries = table.dynamic_entries
        newest = entries[0] if entries else None
        size, maxsize = len(entries), table.maxsize
        last = self._last
        if (
            last is not None
            and last[0] == data
            and last[1] is newest
            and last[2] == size
            and last[3] == maxsize
            and last[4] == self.max_allowed_table_size
            and last[5] == self.max_header_list_size
            and raw
        ):
            return list(last[6])
        headers = _defused(list(super().decode(data, raw)))
        # Kept only if the table did not change: the same entries and the same size limit
        # (and no size update started the block, which may change that limit).
        unchanged = (
            (entries[0] if entries else None) is newest
            and len(entries) == size
            and table.maxsize == maxsize
        )
        if raw and unchanged and data and data[0] & 0xE0 != 0x20:
            limits = (self.max_allowed_table_size, self.max_header_list_size)
            self._last = (bytes(data), newest, size, maxsize, *limits, headers)
        return headers


_CONTENT_LENGTH, _STATUS = b"content-length", b":status"  # DEFUSED_FIELDS without the NUL


def _defused(headers: list[HeaderTuple]) -> list[HeaderTuple]:
    """The block with the fields h2 would end the whole connection for renamed (see
    ``streams.DEFUSED_FIELDS``), so that the stream's own rules refuse it with a 400 and
    the other streams carry on: h2 checks content-length (digits, and all of one value) and
    takes a leading 1xx ``:status`` for an informational response whatever its settings."""
    length: int | None = None
    for index, (name, value) in enumerate(headers):
        if name == _CONTENT_LENGTH:
            if value.isdigit() and (length is None or int(value) == length):
                length = int(value)
                continue
        elif name != _STATUS:
            continue
        headers[index] = HeaderTuple(b"\x00" + name, value)
    return headers


class _Values(list[int]):
    """One setting's value in force, then the ones awaiting acknowledgement: what h2 keeps
    in a deque and uses only through ``append``, ``popleft``, ``[0]`` and ``len``."""

    __slots__ = ()

    def popleft(self) -> int:
        return self.pop(0)


def compact_settings(settings: Settings) -> None:
    """Swap h2's per-setting deques for :class:`_Values` (left alone if h2 changes shape)."""
    values = getattr(settings, "_settings", None)
    if isinstance(values, dict):
        for code, items in values.items():
            if type(items) is deque:
                values[code] = _Values(items)
