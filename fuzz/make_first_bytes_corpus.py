#!/usr/bin/env python3
"""Writes the seed corpus of first_bytes_fuzz into fuzz/corpus/first_bytes/.

The ClientHello is built field by field here (not captured), laid out like a TLS 1.3 client's.
Run from anywhere; it rewrites the files it owns and leaves others alone.
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "first_bytes")


def u8(v): return struct.pack("!B", v)
def u16(v): return struct.pack("!H", v)
def u24(v): return struct.pack("!I", v)[1:]
def vec8(b): return u8(len(b)) + b
def vec16(b): return u16(len(b)) + b
def ext(t, data): return u16(t) + vec16(data)


def client_hello(sni, alpn):
    exts = b""
    if sni is not None:
        exts += ext(0, vec16(u8(0) + vec16(sni)))
    exts += ext(10, vec16(u16(0x001d) + u16(0x0017)))                # supported_groups
    exts += ext(13, vec16(u16(0x0403) + u16(0x0804)))                # signature_algorithms
    if alpn:
        exts += ext(16, vec16(b"".join(vec8(p) for p in alpn)))      # ALPN
    exts += ext(43, vec8(u16(0x0304) + u16(0x0303)))                 # supported_versions
    exts += ext(51, vec16(u16(0x001d) + vec16(bytes(range(32)))))    # key_share x25519
    body = (u16(0x0303) + bytes(range(0x40, 0x60)) + vec8(bytes(range(32)))
            + vec16(u16(0x1301) + u16(0x1302) + u16(0xc02f)) + vec8(b"\x00") + vec16(exts))
    handshake = u8(1) + u24(len(body)) + body
    return u8(22) + u16(0x0301) + vec16(handshake)


def main():
    os.makedirs(OUT, exist_ok=True)
    hello = client_hello(b"www.example.com", [b"h2", b"http/1.1"])
    seeds = {
        "tls_client_hello_sni_alpn": hello,
        "tls_client_hello_no_sni": client_hello(None, [b"h2"]),
        "tls_client_hello_truncated": hello[: len(hello) // 2],
        "http_get_host": b"GET /index.html HTTP/1.1\r\nHost: www.example.com:8080\r\n"
                         b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        "http_two_hosts": b"GET / HTTP/1.1\r\nHost: allowed.example\r\nhost: blocked.example\r\n\r\n",
        "http_absolute_ipv6": b"GET http://[2001:db8::1]:80/ HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n",
        "http_partial": b"GET / HTTP/1.1\r\nHost: www.exa",
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
