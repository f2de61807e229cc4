"""JA4, FoxIO's TLS client fingerprint, from a ClientHello's bytes, sans I/O.

A server that peeks at what a client sends first (its TLS records) learns which client it is talking to
before any TLS is done: Cloudflare answers a fingerprint that is not a browser's with a challenge. The
spec (FoxIO's ``technical_details/JA4.md``): ``t13d1516h2_8daaf6152771_e5627efa2ab1`` is

- ``t``: TLS over TCP (``q`` QUIC, ``d`` DTLS: the caller says which);
- ``13``: the highest version of the supported_versions extension, else the hello's own version;
- ``d``: a server name (SNI) is sent, ``i``: none;
- ``15``, ``16``: the counts of ciphers and of extensions (SNI and ALPN included), two digits, at most 99;
- ``h2``: the first and last characters of the first ALPN value (``00``: none);
- sha256[:12] of the ciphers, 4-digit hex, sorted, comma-separated;
- sha256[:12] of the extensions, sorted, SNI (0000) and ALPN (0010) left out, then ``_`` and the signature
  algorithms in their order.

GREASE values (RFC 8701: ``0x?a?a`` with both bytes equal) count nowhere. The "original" variant
(``JA4_o``) keeps the wire order and SNI and ALPN among the extensions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

_RECORD_HEADER = 5
_HANDSHAKE_RECORD = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_SUPPORTED_GROUPS = 0x000A
_SIGNATURE_ALGORITHMS = 0x000D
_ALPN = 0x0010
_SUPPORTED_VERSIONS = 0x002B

_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_NO_VALUES = "000000000000"


class NotAClientHello(ValueError):
    """The bytes are not a TLS ClientHello (another record type, another handshake message, or malformed)."""


class Incomplete(NotAClientHello):
    """A ClientHello's start, not all of it: read more bytes and try again."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"a partial ClientHello: {needed} bytes in all are needed")
        self.needed = needed
        """How many bytes from the start are needed at the least (more, if a further record follows)."""


def is_grease(value: int) -> bool:
    """A GREASE value of RFC 8701 (``0x0a0a``, ``0x1a1a``, … ``0xfafa``): never part of a fingerprint."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True)
class ClientHello:
    """What JA4 reads from a ClientHello; every list in wire order, GREASE values still in."""

    version: int
    """The hello's own (legacy) version: ``0x0303`` for TLS 1.2 and 1.3."""
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    server_name: str | None
    alpn: tuple[bytes, ...]
    supported_versions: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    supported_groups: tuple[int, ...]

    @classmethod
    def from_records(cls, data: bytes) -> ClientHello:
        """The ClientHello at the start of a TLS stream: its records as a client sent them.

        Raises :class:`Incomplete` when ``data`` stops before the hello's end (a hello may span records),
        :class:`NotAClientHello` when it is something else.
        """
        message = bytearray()
        offset = 0
        while True:
            if len(data) < offset + _RECORD_HEADER:
                raise Incomplete(offset + _RECORD_HEADER)
            if data[offset] != _HANDSHAKE_RECORD or data[offset + 1] not in (0x03, 0xFE):
                raise NotAClientHello(f"not a TLS handshake record: {bytes(data[offset : offset + 3]).hex()}")
            length = int.from_bytes(data[offset + 3 : offset + 5])
            end = offset + _RECORD_HEADER + length
            if len(data) < end:
                raise Incomplete(end)
            message += data[offset + _RECORD_HEADER : end]
            offset = end
            if len(message) >= 4 and len(message) >= 4 + int.from_bytes(message[1:4]):
                return cls.from_handshake(bytes(message))
            if len(message) >= 1 and message[0] != _CLIENT_HELLO:
                raise NotAClientHello(f"handshake message type {message[0]}, not a ClientHello")

    @classmethod
    def from_handshake(cls, message: bytes) -> ClientHello:
        """The ClientHello from its handshake message (type, 3-byte length, body), as QUIC carries it."""
        if len(message) < 4 or message[0] != _CLIENT_HELLO:
            raise NotAClientHello("not a ClientHello handshake message")
        length = int.from_bytes(message[1:4])
        if len(message) < 4 + length:
            raise NotAClientHello("the ClientHello is cut short")
        try:
            return cls._parse(_Reader(message[4 : 4 + length]))
        except IndexError as exc:
            raise NotAClientHello("a malformed ClientHello") from exc

    @classmethod
    def _parse(cls, body: _Reader) -> ClientHello:
        version = body.uint(2)
        body.skip(32)  # random
        body.skip(body.uint(1))  # legacy session id
        ciphers = body.block(2).uints(2)
        body.skip(body.uint(1))  # compression methods
        extensions: list[int] = []
        server_name: str | None = None
        alpn: tuple[bytes, ...] = ()
        versions: tuple[int, ...] = ()
        signatures: tuple[int, ...] = ()
        groups: tuple[int, ...] = ()
        listed = body.block(2) if body.remaining else _Reader(b"")
        while listed.remaining:
            kind = listed.uint(2)
            data = listed.block(2)
            extensions.append(kind)
            if kind == _SERVER_NAME:
                names = data.block(2)
                while names.remaining:
                    name_type, name = names.uint(1), names.block(2).rest()
                    if name_type == 0 and server_name is None:
                        server_name = name.decode("ascii", "replace")
            elif kind == _ALPN:
                protocols = data.block(2)
                values = []
                while protocols.remaining:
                    values.append(protocols.block(1).rest())
                alpn = tuple(values)
            elif kind == _SUPPORTED_VERSIONS:
                versions = data.block(1).uints(2)
            elif kind == _SIGNATURE_ALGORITHMS:
                signatures = data.block(2).uints(2)
            elif kind == _SUPPORTED_GROUPS:
                groups = data.block(2).uints(2)
        return cls(version, ciphers, tuple(extensions), server_name, alpn, versions, signatures, groups)


def ja4(hello: ClientHello | bytes, *, protocol: Literal["t", "q", "d"] = "t", original: bool = False) -> str:
    """The JA4 fingerprint of a ClientHello (or of the TLS records that carry one).

    ``original=True`` gives ``JA4_o``: ciphers and extensions in wire order, SNI and ALPN kept.
    """
    if isinstance(hello, bytes | bytearray):
        hello = ClientHello.from_records(bytes(hello))
    prefix, ciphers, extensions, signatures = _parts(hello, protocol, original)
    return f"{prefix}_{_hashed(ciphers)}_{_hashed(extensions, signatures)}"


def ja4_raw(
    hello: ClientHello | bytes, *, protocol: Literal["t", "q", "d"] = "t", original: bool = False
) -> str:
    """``JA4_r`` (or ``JA4_ro`` with ``original=True``): the lists themselves in place of their hashes."""
    if isinstance(hello, bytes | bytearray):
        hello = ClientHello.from_records(bytes(hello))
    prefix, ciphers, extensions, signatures = _parts(hello, protocol, original)
    tail = f"{extensions}_{signatures}" if signatures else extensions
    return f"{prefix}_{ciphers}_{tail}"


def _parts(hello: ClientHello, protocol: str, original: bool) -> tuple[str, str, str, str]:
    ciphers = [c for c in hello.ciphers if not is_grease(c)]
    extensions = [e for e in hello.extensions if not is_grease(e)]
    versions = [v for v in hello.supported_versions if not is_grease(v)]
    version = _VERSIONS.get(max(versions) if versions else hello.version, "00")
    sni = "d" if _SERVER_NAME in extensions else "i"
    prefix = f"{protocol}{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
    prefix += _alpn_chars(hello.alpn[0] if hello.alpn else b"")
    if not original:
        ciphers.sort()
        extensions = sorted(e for e in extensions if e not in (_SERVER_NAME, _ALPN))
    signatures = [s for s in hello.signature_algorithms if not is_grease(s)]
    return prefix, _hex_list(ciphers), _hex_list(extensions), _hex_list(signatures)


def _alpn_chars(value: bytes) -> str:
    if not value:
        return "00"
    first, last = value[0], value[-1]
    if _alphanumeric(first) and _alphanumeric(last):
        return chr(first) + chr(last)
    text = value.hex()
    return text[0] + text[-1]


def _alphanumeric(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _hex_list(values: list[int]) -> str:
    return ",".join(f"{value:04x}" for value in values)


def _hashed(listed: str, signatures: str = "") -> str:
    if not listed:
        return _NO_VALUES
    text = f"{listed}_{signatures}" if signatures else listed
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Reader:
    """Reads big-endian integers and length-prefixed blocks off bytes; running past the end is an IndexError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise IndexError(f"{size} bytes wanted, {self.remaining} left")
        start, self._at = self._at, self._at + size
        return self._data[start : self._at]

    def skip(self, size: int) -> None:
        self.take(size)

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def block(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.uint(length_size)))

    def uints(self, size: int) -> tuple[int, ...]:
        if self.remaining % size:
            raise IndexError("a list of integers with a partial one")
        return tuple(self.uint(size) for _ in range(self.remaining // size))

    def rest(self) -> bytes:
        return self.take(self.remaining)
