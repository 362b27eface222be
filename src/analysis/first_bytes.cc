#include "analysis/first_bytes.h"

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>

namespace tollgate::analysis {
namespace {

constexpr uint8_t kContentTypeHandshake = 22;
constexpr uint8_t kHandshakeClientHello = 1;
constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtAlpn = 16;
constexpr uint8_t kNameTypeHostName = 0;
constexpr size_t kTlsRecordHeader = 5;
constexpr size_t kMaxHostName = 255;
constexpr size_t kMaxLabel = 63;

// Bounds-checked big-endian reads over a span. A failed read leaves the reader where it was; the
// callers turn it into an error naming the field.
class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t remaining() const { return bytes_.size() - pos_; }
  bool empty() const { return remaining() == 0; }

  bool U8(uint8_t& v) {
    if (remaining() < 1) return false;
    v = bytes_[pos_++];
    return true;
  }
  bool U16(uint16_t& v) {
    if (remaining() < 2) return false;
    v = static_cast<uint16_t>(bytes_[pos_] << 8 | bytes_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool U24(uint32_t& v) {
    if (remaining() < 3) return false;
    v = static_cast<uint32_t>(bytes_[pos_]) << 16 | static_cast<uint32_t>(bytes_[pos_ + 1]) << 8 |
        bytes_[pos_ + 2];
    pos_ += 3;
    return true;
  }
  bool Take(size_t n, std::span<const uint8_t>& out) {
    if (remaining() < n) return false;
    out = bytes_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // A vector with a 1- or 2-byte length prefix (RFC 8446 §3.4).
  bool Vector8(std::span<const uint8_t>& out) {
    uint8_t n = 0;
    size_t start = pos_;
    if (U8(n) && Take(n, out)) return true;
    pos_ = start;
    return false;
  }
  bool Vector16(std::span<const uint8_t>& out) {
    uint16_t n = 0;
    size_t start = pos_;
    if (U16(n) && Take(n, out)) return true;
    pos_ = start;
    return false;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHex(char c) { return IsDigit(c) || (Lower(c) >= 'a' && Lower(c) <= 'f'); }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return Lower(x) == Lower(y); });
}

void SetNeeded(size_t* bytes_needed, size_t n) {
  if (bytes_needed != nullptr) *bytes_needed = n;
}

Unexpected NeedMore(const char* what, size_t have, size_t need, size_t* bytes_needed) {
  SetNeeded(bytes_needed, need);
  return Unexpected(ErrorCode::kUnavailable, std::string(what) + ": have " + std::to_string(have) +
                                                 " bytes, need at least " + std::to_string(need) +
                                                 "; wait for more of the flow");
}

// A DNS name as a host rule can match it: LDH labels of 1..63 bytes joined by dots, at most 255
// bytes, one trailing dot tolerated and dropped (so "example.com." cannot dodge a rule for
// "example.com"), lowercased. With `allow_ipv4` false, a name whose last label is all digits is
// refused: no TLD is numeric (RFC 3696 §2), so such a name is an IPv4 literal.
Expected<std::string> NormalizeHostName(std::string_view raw, bool allow_ipv4, const char* where) {
  auto bad = [&](std::string why) {
    return Unexpected(ErrorCode::kMalformed, std::string(where) + ": " + why);
  };
  if (raw.size() > kMaxHostName) return bad("host name longer than 255 bytes");
  if (!raw.empty() && raw.back() == '.') raw.remove_suffix(1);
  if (raw.empty()) return bad("empty host name");
  std::string name;
  name.reserve(raw.size());
  size_t label_len = 0;
  bool label_all_digits = true;
  for (char c : raw) {
    if (c == '.') {
      if (label_len == 0) return bad("empty label in host name");
      label_len = 0;
      label_all_digits = true;
    } else if (IsAlpha(c) || IsDigit(c) || c == '-') {
      if (++label_len > kMaxLabel) return bad("host name label longer than 63 bytes");
      label_all_digits = label_all_digits && IsDigit(c);
    } else {
      return bad("host name has a byte that is not a letter, digit, '-' or '.'");
    }
    name.push_back(Lower(c));
  }
  if (!allow_ipv4 && label_all_digits) {
    return bad("server_name is an IP literal, which RFC 6066 §3 forbids");
  }
  return name;
}

// --- TLS -------------------------------------------------------------------------------------

Unexpected TlsMalformed(std::string why) {
  return Unexpected(ErrorCode::kMalformed, "TLS ClientHello: " + why);
}

Status ReadServerName(std::span<const uint8_t> data, ClientHello& hello) {
  ByteReader ext(data);
  std::span<const uint8_t> list;
  if (!ext.Vector16(list) || !ext.empty()) {
    return TlsMalformed("server_name list length disagrees with the extension length");
  }
  if (list.empty()) return TlsMalformed("empty server_name list");
  ByteReader entries(list);
  bool seen_host_name = false;
  while (!entries.empty()) {
    uint8_t name_type = 0;
    std::span<const uint8_t> name;
    // Every name type defined so far is opaque<1..2^16-1>; RFC 6066 §3 lets an unknown type
    // end the parse, but reading it as a vector lets a later host_name still be checked.
    if (!entries.U8(name_type) || !entries.Vector16(name)) {
      return TlsMalformed("server_name entry runs past its list");
    }
    if (name_type != kNameTypeHostName) continue;
    // RFC 6066 §3: at most one name of each type. Two would let the server and us differ.
    if (seen_host_name) return TlsMalformed("two host_name entries in server_name");
    seen_host_name = true;
    auto normalized = NormalizeHostName(AsText(name), /*allow_ipv4=*/false, "TLS server_name");
    if (!normalized) return Unexpected(normalized.error());
    hello.server_name = std::move(*normalized);
  }
  return {};
}

Status ReadAlpn(std::span<const uint8_t> data, ClientHello& hello) {
  ByteReader ext(data);
  std::span<const uint8_t> list;
  if (!ext.Vector16(list) || !ext.empty()) {
    return TlsMalformed("ALPN list length disagrees with the extension length");
  }
  if (list.empty()) return TlsMalformed("empty ALPN list");  // RFC 7301 §3.1: <2..2^16-1>
  ByteReader names(list);
  while (!names.empty()) {
    std::span<const uint8_t> name;
    if (!names.Vector8(name)) return TlsMalformed("ALPN protocol name runs past its list");
    if (name.empty()) return TlsMalformed("empty ALPN protocol name");
    if (hello.alpn.size() == kMaxAlpnProtocols) {
      return Unexpected(
          ErrorCode::kTooLarge,
          "TLS ClientHello: more than " + std::to_string(kMaxAlpnProtocols) + " ALPN protocols");
    }
    hello.alpn.emplace_back(AsText(name));
  }
  return {};
}

// The ClientHello body, whose length the record and handshake headers already vouch for, so any
// short read here is a lie in an inner length: malformed, never "need more".
Expected<ClientHello> ReadClientHelloBody(std::span<const uint8_t> body, uint16_t record_version) {
  ClientHello hello;
  hello.record_version = record_version;
  ByteReader r(body);
  std::span<const uint8_t> skipped;
  if (!r.U16(hello.legacy_version)) return TlsMalformed("truncated legacy_version");
  if (hello.legacy_version >> 8 != 3) return TlsMalformed("legacy_version is not 3.x");
  if (!r.Take(32, skipped)) return TlsMalformed("truncated random");
  std::span<const uint8_t> session_id;
  if (!r.Vector8(session_id)) return TlsMalformed("session id runs past the ClientHello");
  if (session_id.size() > 32) return TlsMalformed("session id longer than 32 bytes");
  std::span<const uint8_t> cipher_suites;
  if (!r.Vector16(cipher_suites)) return TlsMalformed("cipher suites run past the ClientHello");
  if (cipher_suites.empty() || cipher_suites.size() % 2 != 0) {
    return TlsMalformed("cipher suites length is zero or odd");
  }
  std::span<const uint8_t> compression;
  if (!r.Vector8(compression) || compression.empty()) {
    return TlsMalformed("compression methods missing or run past the ClientHello");
  }
  if (r.empty()) return hello;  // no extensions at all (RFC 5246 §7.4.1.2 allows it)
  std::span<const uint8_t> extensions;
  if (!r.Vector16(extensions) || !r.empty()) {
    return TlsMalformed("extensions length disagrees with the ClientHello length");
  }
  ByteReader exts(extensions);
  bool seen_sni = false;
  bool seen_alpn = false;
  while (!exts.empty()) {
    uint16_t type = 0;
    std::span<const uint8_t> data;
    if (!exts.U16(type) || !exts.Vector16(data)) {
      return TlsMalformed("extension runs past the extensions block");
    }
    // RFC 8446 §4.2: no extension type twice. Checked for the two we read, so the first and the
    // last copy cannot disagree between us and the server.
    if (type == kExtServerName) {
      if (seen_sni) return TlsMalformed("two server_name extensions");
      seen_sni = true;
      if (auto ok = ReadServerName(data, hello); !ok) return Unexpected(ok.error());
    } else if (type == kExtAlpn) {
      if (seen_alpn) return TlsMalformed("two ALPN extensions");
      seen_alpn = true;
      if (auto ok = ReadAlpn(data, hello); !ok) return Unexpected(ok.error());
    }
  }
  return hello;
}

// --- HTTP ------------------------------------------------------------------------------------

// RFC 9110 §5.6.2 tchar.
bool IsTokenChar(char c) {
  if (IsAlpha(c) || IsDigit(c)) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Field values: VCHAR, obs-text, SP and HTAB; never NUL, CR, LF or other controls (RFC 9110 §5.5).
bool IsFieldValue(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Unexpected HttpMalformed(std::string why) {
  return Unexpected(ErrorCode::kMalformed, "HTTP request: " + why);
}

// uri-host [ ":" port ] from a Host header or a target's authority -> lowercase host.
Expected<std::string> NormalizeAuthority(std::string_view authority) {
  if (authority.find('@') != std::string_view::npos) {
    // userinfo is deprecated (RFC 9110 §4.2.4) and a classic way to make two parsers disagree.
    return HttpMalformed("userinfo ('@') in the authority");
  }
  std::string_view host = authority;
  std::string_view port;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return HttpMalformed("IPv6 literal without ']'");
    std::string_view rest = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return HttpMalformed("bytes after the IPv6 literal's ']'");
      port = rest.substr(1);
    }
    bool v6_chars = std::all_of(host.begin(), host.end(),
                                [](char c) { return IsHex(c) || c == ':' || c == '.'; });
    if (host.size() < 2 || !v6_chars || host.find(':') == std::string_view::npos) {
      return HttpMalformed("bad IPv6 literal in the authority");
    }
  } else if (size_t colon = host.find(':'); colon != std::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (port.size() > 5 || !std::all_of(port.begin(), port.end(), IsDigit)) {
    return HttpMalformed("bad port in the authority");
  }
  if (!authority.empty() && authority.front() == '[') {
    std::string lowered(host);
    std::transform(lowered.begin(), lowered.end(), lowered.begin(), Lower);
    return lowered;
  }
  return NormalizeHostName(host, /*allow_ipv4=*/true, "HTTP host");
}

// The authority of an absolute-form target ("http://host:port/path"), if it is one.
std::optional<std::string_view> AbsoluteFormAuthority(std::string_view target) {
  size_t sep = target.find("://");
  if (sep == std::string_view::npos || sep == 0 || !IsAlpha(target[0])) return std::nullopt;
  for (char c : target.substr(0, sep)) {
    if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-' && c != '.') return std::nullopt;
  }
  std::string_view rest = target.substr(sep + 3);
  return rest.substr(0, rest.find_first_of("/?#"));
}

// Whether `partial` (no CRLF yet) could still become a request line: a method token, and if a
// space follows, anything. Keeps "need more" for things that are plainly not HTTP.
bool PlausibleRequestLinePrefix(std::string_view partial) {
  constexpr size_t kMaxMethod = 32;
  size_t sp = partial.find(' ');
  std::string_view method = partial.substr(0, sp);
  if (method.size() > kMaxMethod) return false;
  return std::all_of(method.begin(), method.end(), IsTokenChar) && !(sp == 0);
}

}  // namespace

FirstBytesKind Classify(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return FirstBytesKind::kUnknown;
  if (bytes[0] == kContentTypeHandshake) {
    if (bytes.size() >= 2 && bytes[1] != 3) return FirstBytesKind::kUnknown;
    if (bytes.size() >= 3 && (bytes[2] < 1 || bytes[2] > 4)) return FirstBytesKind::kUnknown;
    return FirstBytesKind::kTls;
  }
  static constexpr std::array<std::string_view, 9> kMethods = {
      "GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "};
  std::string_view text = AsText(bytes);
  for (std::string_view m : kMethods) {
    size_t n = std::min(m.size(), text.size());
    if (text.substr(0, n) == m.substr(0, n)) return FirstBytesKind::kHttp;
  }
  return FirstBytesKind::kUnknown;
}

Expected<ClientHello> ReadTlsClientHello(std::span<const uint8_t> bytes, size_t* bytes_needed) {
  // Check the record header as far as it is present, so a short non-TLS prefix is "not TLS"
  // rather than "wait".
  if (!bytes.empty() && bytes[0] != kContentTypeHandshake) {
    return Unexpected(ErrorCode::kProtocol, "not TLS: first byte is not a handshake record");
  }
  if ((bytes.size() >= 2 && bytes[1] != 3) ||
      (bytes.size() >= 3 && (bytes[2] < 1 || bytes[2] > 4))) {
    return Unexpected(ErrorCode::kProtocol, "not TLS: record version is not 3.1 to 3.4");
  }
  if (bytes.size() < kTlsRecordHeader) {
    return NeedMore("TLS record header", bytes.size(), kTlsRecordHeader, bytes_needed);
  }
  uint16_t record_version = static_cast<uint16_t>(bytes[1] << 8 | bytes[2]);
  size_t record_len = static_cast<size_t>(bytes[3]) << 8 | bytes[4];
  if (record_len > kMaxTlsRecordLength) {
    return TlsMalformed("record length " + std::to_string(record_len) + " exceeds 2^14");
  }
  if (record_len < 4) return TlsMalformed("record too short for a handshake header");
  // Wait for the whole record: reading a prefix could return a name the rest then contradicts
  // (e.g. a second server_name extension).
  if (bytes.size() < kTlsRecordHeader + record_len) {
    return NeedMore("TLS record", bytes.size(), kTlsRecordHeader + record_len, bytes_needed);
  }
  ByteReader record(bytes.subspan(kTlsRecordHeader, record_len));
  uint8_t handshake_type = 0;
  uint32_t handshake_len = 0;
  (void)record.U8(handshake_type);
  (void)record.U24(handshake_len);
  if (handshake_type != kHandshakeClientHello) {
    return TlsMalformed("first handshake message is type " + std::to_string(handshake_type) +
                        ", not ClientHello (1)");
  }
  if (handshake_len > record.remaining()) {
    return TlsMalformed("ClientHello spans more than one TLS record (not supported)");
  }
  if (handshake_len < record.remaining()) {
    return TlsMalformed("bytes after the ClientHello in its record");
  }
  std::span<const uint8_t> body;
  (void)record.Take(handshake_len, body);
  return ReadClientHelloBody(body, record_version);
}

Expected<std::string> ReadHttpHost(std::span<const uint8_t> bytes, size_t* bytes_needed) {
  std::string_view text = AsText(bytes.first(std::min(bytes.size(), kMaxHttpHeaderBytes)));
  auto need_more_or_too_large = [&](const char* what) -> Unexpected {
    if (bytes.size() >= kMaxHttpHeaderBytes) {
      return Unexpected(ErrorCode::kTooLarge, std::string("HTTP request: ") + what +
                                                  " does not end within " +
                                                  std::to_string(kMaxHttpHeaderBytes) + " bytes");
    }
    return NeedMore(what, bytes.size(), bytes.size() + 1, bytes_needed);
  };

  // Request line: method SP request-target SP HTTP-version CRLF (RFC 9112 §3).
  size_t eol = text.find("\r\n");
  if (eol == std::string_view::npos) {
    if (!PlausibleRequestLinePrefix(text)) {
      return Unexpected(ErrorCode::kProtocol, "not HTTP/1: no request method");
    }
    return need_more_or_too_large("HTTP request line");
  }
  std::string_view line = text.substr(0, eol);
  size_t sp1 = line.find(' ');
  size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 == sp2 || !IsToken(line.substr(0, sp1))) {
    return Unexpected(ErrorCode::kProtocol,
                      "not HTTP/1: request line is not method target version");
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return Unexpected(ErrorCode::kProtocol, "not HTTP/1: version is not HTTP/1.0 or HTTP/1.1");
  }
  if (target.empty() || !std::all_of(target.begin(), target.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f;
      })) {
    return HttpMalformed("request target is empty or has spaces or control bytes");
  }

  // The authority the target names, which a proxy would route by (RFC 9112 §3.2.2, §3.2.3).
  std::optional<std::string_view> target_authority;
  if (method == "CONNECT") {
    target_authority = target;
  } else {
    target_authority = AbsoluteFormAuthority(target);
  }

  // Header fields, each a complete CRLF-terminated line, until the empty line.
  std::optional<std::string_view> host_value;
  size_t pos = eol + 2;
  while (true) {
    size_t end = text.find("\r\n", pos);
    if (end == std::string_view::npos) return need_more_or_too_large("HTTP header block");
    std::string_view field = text.substr(pos, end - pos);
    pos = end + 2;
    if (field.empty()) break;
    if (field.front() == ' ' || field.front() == '\t') {
      return HttpMalformed("obsolete line folding in headers");  // RFC 9112 §5.2
    }
    size_t colon = field.find(':');
    if (colon == std::string_view::npos || !IsToken(field.substr(0, colon))) {
      // Also catches "Host :" (RFC 9112 §5.1: whitespace before the colon must be rejected).
      return HttpMalformed("header line without a valid field name and ':'");
    }
    std::string_view value = field.substr(colon + 1);
    if (!IsFieldValue(value)) return HttpMalformed("control byte in a header value");
    if (EqualsIgnoreCase(field.substr(0, colon), "host")) {
      if (host_value) return HttpMalformed("two Host headers");
      host_value = TrimOws(value);
    }
  }

  std::optional<std::string> from_target;
  if (target_authority) {
    auto normalized = NormalizeAuthority(*target_authority);
    if (!normalized) return Unexpected(normalized.error());
    from_target = std::move(*normalized);
  }
  if (!host_value) {
    if (from_target) return std::move(*from_target);
    return Unexpected(ErrorCode::kNotFound, "HTTP request has no Host header");
  }
  if (host_value->empty()) {
    if (from_target) return std::move(*from_target);
    return Unexpected(ErrorCode::kNotFound, "HTTP request has an empty Host header");
  }
  auto from_header = NormalizeAuthority(*host_value);
  if (!from_header) return Unexpected(from_header.error());
  if (from_target && *from_target != *from_header) {
    return HttpMalformed("Host header '" + *from_header + "' disagrees with the target's '" +
                         *from_target + "'");
  }
  return std::move(*from_header);
}

}  // namespace tollgate::analysis
