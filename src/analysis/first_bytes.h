// Readers of a flow's first client bytes, for the `inspect(n)` verdict (issue 4, item 3): the
// daemon hands the bytes the filter has held so far to Classify() and then to ReadTlsClientHello()
// or ReadHttpHost(), and matches the name they return against host rules. The readers are pure
// functions over a byte span (no OS calls, no allocation beyond the strings they return), so the
// fuzz target and the tests drive them directly.
//
// Every reader answers in one of four ways, by ErrorCode:
//  - a value: the name (and for TLS the ALPN list), already lowercased and validated;
//  - kUnavailable: the bytes so far are a consistent prefix, but too short to decide. The filter
//    should wait for more; `bytes_needed` (when given) receives a lower bound of the total input
//    size worth retrying with;
//  - kProtocol: the bytes are not this protocol at all (try another reader, or nDPI);
//  - kMalformed, kTooLarge or kNotFound: the bytes claim to be this protocol but are broken, over a
//    bound, or carry no name. Decide without a name (the rule's `on_unknown`), count it, move on.
// A reader never returns a name it has not seen complete: any truncation waits or fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace tollgate::analysis {

// TLS plaintext records carry at most 2^14 bytes (RFC 8446 §5.1); a larger length is not TLS.
inline constexpr size_t kMaxTlsRecordLength = 16384;
// More ALPN protocols than this is not a browser or a library talking; refuse rather than copy.
inline constexpr size_t kMaxAlpnProtocols = 32;
// The request line and headers must end (CRLFCRLF) within this many bytes. Matches common server
// limits (nginx's default large_client_header_buffers line is 8k).
inline constexpr size_t kMaxHttpHeaderBytes = 8192;

enum class FirstBytesKind { kTls, kHttp, kUnknown };

// A quick look at the first bytes, for choosing a reader: kTls for a TLS handshake record header
// (or a prefix of one), kHttp for an HTTP/1 request method followed by a space (or a prefix of
// one), otherwise kUnknown. It does not validate beyond that; the readers do.
FirstBytesKind Classify(std::span<const uint8_t> bytes);

struct ClientHello {
  uint16_t record_version = 0;  // record layer version, 0x0301..0x0304
  uint16_t legacy_version = 0;  // ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)
  // From the server_name extension's host_name entry: lowercase LDH labels joined by dots, no
  // trailing dot. Empty when the client sent no server_name extension.
  std::string server_name;
  // application_layer_protocol_negotiation, in the client's order, raw bytes (e.g. "h2").
  std::vector<std::string> alpn;
};

// Reads a ClientHello from the first TLS record. Only a ClientHello that fits in one record is
// read (every real client's does; a handshake split over several records gets kMalformed).
// An IP literal as server_name is kMalformed: RFC 6066 §3 forbids it and real clients omit SNI
// instead, so a client sending one is either broken or trying to dodge a host rule.
Expected<ClientHello> ReadTlsClientHello(std::span<const uint8_t> bytes,
                                         size_t* bytes_needed = nullptr);

// Reads the host an HTTP/1.0 or 1.1 request is for: the authority of an absolute-form or CONNECT
// target if there is one, otherwise the Host header. Returned lowercase, without port, and
// without brackets for an IPv6 literal ("[::1]:80" -> "::1"). Two Host headers, or a Host that
// disagrees with the target's authority, are kMalformed: the server and this filter might pick
// different ones (request smuggling). No host at all is kNotFound.
Expected<std::string> ReadHttpHost(std::span<const uint8_t> bytes, size_t* bytes_needed = nullptr);

}  // namespace tollgate::analysis
