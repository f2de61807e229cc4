"""JA4 from ClientHello bytes, against the examples FoxIO's spec publishes (technical_details/JA4.md).

The spec's example hello is rebuilt here from its lists (ciphers, extensions and signature algorithms in
wire order, with GREASE values as Chrome adds them), then fingerprinted from its bytes.
"""

from __future__ import annotations

import contextlib
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_pplx_labs.emulator.ja4 import (
    ClientHello,
    Incomplete,
    NotAClientHello,
    is_grease,
    ja4,
    ja4_raw,
)

# FoxIO's example (technical_details/JA4.md, "Cipher hash", "Extension hash" and "Raw Output").
SPEC_CIPHERS = "1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035"
SPEC_EXTENSIONS = "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015"
SPEC_SIGNATURES = "0403,0804,0401,0503,0805,0501,0806,0601"
SPEC_JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
SPEC_JA4_O = "t13d1516h2_acb858a92679_18f69afefd3d"
SPEC_JA4_R = (
    "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
    "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
    "0403,0804,0401,0503,0805,0501,0806,0601"
)
SPEC_JA4_RO = (
    "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_"
    "001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_"
    "0403,0804,0401,0503,0805,0501,0806,0601"
)


def _codes(listed: str) -> list[int]:
    return [int(code, 16) for code in listed.split(",")] if listed else []


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _vector(items: list[bytes], size: int) -> bytes:
    body = b"".join(items)
    return len(body).to_bytes(size, "big") + body


def _extension_data(
    kind: int, *, server_name: str, alpn: list[bytes], signatures: list[int], versions: list[int]
) -> bytes:
    if kind == 0x0000:
        name = server_name.encode()
        return _vector([b"\x00" + _vector([name], 2)], 2)
    if kind == 0x0010:
        return _vector([_vector([value], 1) for value in alpn], 2)
    if kind == 0x000D:
        return _vector([_u16(code) for code in signatures], 2)
    if kind == 0x002B:
        return _vector([_u16(code) for code in versions], 1)
    if kind == 0x000A:
        return _vector([_u16(code) for code in (0x1A1A, 0x001D, 0x0017)], 2)
    return b"\x00" if kind == 0x0015 else b""


def build_hello(
    ciphers: list[int],
    extensions: list[int],
    *,
    server_name: str = "example.com",
    alpn: list[bytes] | None = None,
    signatures: list[int] | None = None,
    versions: list[int] | None = None,
    legacy_version: int = 0x0303,
    record_size: int = 16384,
) -> bytes:
    """A ClientHello with these lists, in TLS records of at most ``record_size`` bytes each."""
    data = {
        "server_name": server_name,
        "alpn": [b"h2", b"http/1.1"] if alpn is None else alpn,
        "signatures": [] if signatures is None else signatures,
        "versions": [0x0A0A, 0x0304, 0x0303] if versions is None else versions,
    }
    listed = [_u16(kind) + _vector([_extension_data(kind, **data)], 2) for kind in extensions]
    body = (
        _u16(legacy_version)
        + bytes(32)  # random
        + _vector([bytes(32)], 1)  # legacy session id
        + _vector([_u16(code) for code in ciphers], 2)
        + _vector([b"\x00"], 1)  # compression: null
        + _vector(listed, 2)
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    records = b""
    for start in range(0, len(message), record_size):
        part = message[start : start + record_size]
        records += b"\x16\x03\x01" + _u16(len(part)) + part
    return records


def spec_hello(**changes: object) -> bytes:
    """The spec's example as Chrome sends it: GREASE first among ciphers, first and last among extensions."""
    arguments: dict[str, object] = {
        "ciphers": [0x4A4A, *_codes(SPEC_CIPHERS)],
        "extensions": [0x2A2A, *_codes(SPEC_EXTENSIONS), 0x3A3A],
        "signatures": _codes(SPEC_SIGNATURES),
    }
    arguments.update(changes)
    return build_hello(**arguments)  # type: ignore[arg-type]


def test_the_spec_example_gives_the_spec_fingerprints() -> None:
    hello = spec_hello()
    assert ja4(hello) == SPEC_JA4
    assert ja4_raw(hello) == SPEC_JA4_R
    assert ja4(hello, original=True) == SPEC_JA4_O
    assert ja4_raw(hello, original=True) == SPEC_JA4_RO


def test_the_parsed_hello_keeps_wire_order_and_grease() -> None:
    parsed = ClientHello.from_records(spec_hello())
    assert parsed.ciphers[0] == 0x4A4A
    assert parsed.extensions[0] == 0x2A2A
    assert parsed.extensions[-1] == 0x3A3A
    assert parsed.server_name == "example.com"
    assert parsed.alpn == (b"h2", b"http/1.1")
    assert parsed.supported_versions == (0x0A0A, 0x0304, 0x0303)
    assert parsed.supported_groups == (0x1A1A, 0x001D, 0x0017)
    assert ja4(parsed) == SPEC_JA4


def test_without_signature_algorithms_the_extension_hash_has_no_underscore() -> None:
    # The spec: "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01 = 6d807ffa2a79".
    assert ja4(spec_hello(signatures=[])).endswith("_6d807ffa2a79")


def test_no_sni_is_i_and_the_sorted_hash_does_not_change() -> None:
    extensions = [code for code in _codes(SPEC_EXTENSIONS) if code != 0x0000]
    fingerprint = ja4(spec_hello(extensions=extensions))
    assert fingerprint == "t13i1515h2_8daaf6152771_e5627efa2ab1"


def test_no_ciphers_and_no_extensions_are_zeros() -> None:
    assert ja4(build_hello([], [])) == "t12i000000_000000000000_000000000000"


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),
        (b"", "00"),
        # The spec's non-alphanumeric examples: the first and last characters of the value's hex.
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
    ],
)
def test_alpn_characters(first: bytes, expected: str) -> None:
    assert ja4(spec_hello(alpn=[first, b"http/1.1"]))[8:10] == expected


def test_no_alpn_extension_is_00() -> None:
    extensions = [code for code in _codes(SPEC_EXTENSIONS) if code != 0x0010]
    assert ja4(spec_hello(extensions=extensions)).startswith("t13d151500_")


@pytest.mark.parametrize(
    ("versions", "legacy", "expected"),
    [
        ([0x0A0A, 0x0304, 0x0303], 0x0303, "13"),  # the highest supported version, GREASE ignored
        ([0x0303, 0x0302], 0x0303, "12"),
        (None, 0x0302, "11"),  # no supported_versions: the hello's own version
        (None, 0x0300, "s3"),
        (None, 0x1234, "00"),
    ],
)
def test_the_version(versions: list[int] | None, legacy: int, expected: str) -> None:
    extensions = _codes(SPEC_EXTENSIONS)
    if versions is None:
        extensions.remove(0x002B)
    hello = spec_hello(extensions=extensions, versions=versions or [], legacy_version=legacy)
    assert ja4(hello)[1:3] == expected


def test_counts_stop_at_99() -> None:
    ciphers = list(range(0x0100, 0x0100 + 120))
    assert ja4(build_hello(ciphers, [0x0000]))[4:6] == "99"


def test_protocol_letter_is_the_callers() -> None:
    assert ja4(spec_hello(), protocol="q").startswith("q13d")


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_grease_is_the_rfc_8701_pattern(value: int) -> None:
    expected = value in {0x0A0A + 0x1010 * n for n in range(16)}
    assert is_grease(value) is expected


def test_a_hello_split_across_records_is_joined() -> None:
    whole = spec_hello()
    split = spec_hello(record_size=100)
    assert len(split) > len(whole)
    assert ja4(split) == SPEC_JA4


def test_a_partial_hello_says_how_much_more_it_needs() -> None:
    hello = spec_hello(record_size=100)
    with pytest.raises(Incomplete) as caught:
        ClientHello.from_records(hello[:3])
    assert caught.value.needed == 5
    with pytest.raises(Incomplete) as caught:
        ClientHello.from_records(hello[:50])
    assert caught.value.needed == 105  # the first record's end
    for size in range(len(hello)):  # every prefix is incomplete, never misread
        with pytest.raises(Incomplete):
            ClientHello.from_records(hello[:size])
    assert ja4(hello) == SPEC_JA4


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP on the TLS port
        b"\x17\x03\x03\x00\x01\x00",  # application data
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello
        b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",  # a ClientHello cut inside its body
    ],
)
def test_what_is_not_a_client_hello_is_refused(data: bytes) -> None:
    with pytest.raises(NotAClientHello) as caught:
        ClientHello.from_records(data)
    assert not isinstance(caught.value, Incomplete)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_not_a_client_hello(data: bytes) -> None:
    with contextlib.suppress(NotAClientHello):
        ja4(data)


_SPEC_HELLO = spec_hello()


@given(st.integers(min_value=0, max_value=len(_SPEC_HELLO) - 1), st.integers(min_value=0, max_value=255))
def test_a_hello_with_any_byte_changed_parses_or_raises_not_a_client_hello(at: int, value: int) -> None:
    changed = _SPEC_HELLO[:at] + bytes([value]) + _SPEC_HELLO[at + 1 :]
    with contextlib.suppress(NotAClientHello):
        ja4(changed)


def _python_client_hello(context: ssl.SSLContext, server_name: str | None) -> bytes:
    """The ClientHello Python's ssl module writes for ``context``: a handshake on memory, never sent."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_python_s_own_client_hello_reads_as_its_context_says() -> None:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    named = ClientHello.from_records(_python_client_hello(context, "example.com"))
    assert named.server_name == "example.com"
    assert named.alpn == (b"http/1.1",)
    assert not any(is_grease(code) for code in named.ciphers + named.extensions)  # OpenSSL sends none
    fingerprint = ja4(named)
    assert fingerprint.startswith("t13d")
    assert fingerprint[8:10] == "h1"
    assert int(fingerprint[4:6]) == len(named.ciphers)
    # To an address there is no SNI: one extension fewer, the same hashes.
    bare = ja4(_python_client_hello(context, None))
    assert bare[3] == "i"
    assert int(bare[6:8]) == int(fingerprint[6:8]) - 1
    assert bare[10:] == fingerprint[10:]
