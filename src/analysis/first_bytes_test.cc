#include "analysis/first_bytes.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::analysis {
namespace {

using Bytes = std::vector<uint8_t>;

void Put8(Bytes& b, size_t v) { b.push_back(static_cast<uint8_t>(v)); }
void Put16(Bytes& b, size_t v) {
  Put8(b, v >> 8);
  Put8(b, v);
}
void Put24(Bytes& b, size_t v) {
  Put8(b, v >> 16);
  Put16(b, v);
}
void Append(Bytes& b, const Bytes& more) { b.insert(b.end(), more.begin(), more.end()); }
void Append(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }

// Builds a ClientHello the way a TLS 1.3 client lays it out; each field can be bent for a test.
struct HelloBuilder {
  std::optional<std::string> sni;
  std::vector<std::string> alpn;
  uint16_t record_version = 0x0301;
  size_t session_id_len = 32;
  std::vector<Bytes> extra_extensions;

  static Bytes Extension(uint16_t type, const Bytes& data) {
    Bytes e;
    Put16(e, type);
    Put16(e, data.size());
    Append(e, data);
    return e;
  }
  static Bytes SniExtension(std::string_view name) {
    Bytes list;
    Put8(list, 0);
    Put16(list, name.size());
    Append(list, name);
    Bytes data;
    Put16(data, list.size());
    Append(data, list);
    return Extension(0, data);
  }

  Bytes Body() const {
    Bytes body;
    Put16(body, 0x0303);
    for (int i = 0; i < 32; ++i) Put8(body, 0xa0 + i);
    Put8(body, session_id_len);
    for (size_t i = 0; i < session_id_len; ++i) Put8(body, i);
    Put16(body, 6);
    for (uint16_t suite : {0x1301, 0x1302, 0xc02f}) Put16(body, suite);
    Put8(body, 1);
    Put8(body, 0);
    Bytes exts;
    if (sni) Append(exts, SniExtension(*sni));
    if (!alpn.empty()) {
      Bytes list;
      for (const auto& p : alpn) {
        Put8(list, p.size());
        Append(list, p);
      }
      Bytes data;
      Put16(data, list.size());
      Append(data, list);
      Append(exts, Extension(16, data));
    }
    Append(exts, Extension(43, Bytes{2, 0x03, 0x04}));  // supported_versions: TLS 1.3
    for (const auto& e : extra_extensions) Append(exts, e);
    Put16(body, exts.size());
    Append(body, exts);
    return body;
  }

  Bytes Build() const {
    Bytes body = Body();
    Bytes handshake;
    Put8(handshake, 1);
    Put24(handshake, body.size());
    Append(handshake, body);
    Bytes record;
    Put8(record, 22);
    Put16(record, record_version);
    Put16(record, handshake.size());
    Append(record, handshake);
    return record;
  }
};

Bytes Text(std::string_view s) { return Bytes(s.begin(), s.end()); }

TEST(ClientHelloTest, ReadsSniAndAlpn) {
  HelloBuilder b;
  b.sni = "WWW.Example.COM";
  b.alpn = {"h2", "http/1.1"};
  Bytes bytes = b.Build();
  EXPECT_EQ(Classify(bytes), FirstBytesKind::kTls);
  auto hello = ReadTlsClientHello(bytes);
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->server_name, "www.example.com");
  EXPECT_EQ(hello->alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(hello->record_version, 0x0301);
  EXPECT_EQ(hello->legacy_version, 0x0303);
}

TEST(ClientHelloTest, TrailingBytesAfterTheRecordAreIgnored) {
  HelloBuilder b;
  b.sni = "example.com";
  Bytes bytes = b.Build();
  Append(bytes, Bytes{23, 3, 3, 0, 1, 0});  // early data record
  auto hello = ReadTlsClientHello(bytes);
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->server_name, "example.com");
}

TEST(ClientHelloTest, NoSniIsAnEmptyName) {
  HelloBuilder b;
  b.alpn = {"h2"};
  auto hello = ReadTlsClientHello(b.Build());
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->server_name, "");
  EXPECT_EQ(hello->alpn.size(), 1u);
}

TEST(ClientHelloTest, TrailingDotIsDropped) {
  HelloBuilder b;
  b.sni = "example.com.";
  auto hello = ReadTlsClientHello(b.Build());
  ASSERT_TRUE(hello) << hello.error().message;
  EXPECT_EQ(hello->server_name, "example.com");
}

// RFC 6066 §3 forbids IP literals in HostName; we refuse the hello rather than report an address
// as a name (see first_bytes.h).
TEST(ClientHelloTest, IpLiteralSniIsMalformed) {
  for (const char* name : {"192.0.2.1", "10.1", "2001:db8::1", "[2001:db8::1]"}) {
    HelloBuilder b;
    b.sni = name;
    auto hello = ReadTlsClientHello(b.Build());
    ASSERT_FALSE(hello) << name;
    EXPECT_EQ(hello.error().code, ErrorCode::kMalformed) << name;
  }
  HelloBuilder digits_first;
  digits_first.sni = "1.2.3.example";  // numeric labels are fine when the TLD is not
  EXPECT_TRUE(ReadTlsClientHello(digits_first.Build()));
}

TEST(ClientHelloTest, BadNamesAreMalformed) {
  std::string nul_name("evil.com\0.example.com", 21);
  for (const std::string& name :
       {nul_name, std::string("a..b"), std::string(".a"), std::string("a_b.com"),
        std::string("x y.com"), std::string(64, 'a') + ".com", std::string(256, 'a'),
        std::string("")}) {
    HelloBuilder b;
    b.sni = name;
    auto hello = ReadTlsClientHello(b.Build());
    ASSERT_FALSE(hello) << name;
    EXPECT_EQ(hello.error().code, ErrorCode::kMalformed) << name;
  }
}

TEST(ClientHelloTest, DuplicateSniIsMalformed) {
  HelloBuilder b;
  b.sni = "allowed.example";
  b.extra_extensions.push_back(HelloBuilder::SniExtension("blocked.example"));
  auto hello = ReadTlsClientHello(b.Build());
  ASSERT_FALSE(hello);
  EXPECT_EQ(hello.error().code, ErrorCode::kMalformed);
}

TEST(ClientHelloTest, TooManyAlpnProtocolsIsTooLarge) {
  HelloBuilder b;
  for (size_t i = 0; i <= kMaxAlpnProtocols; ++i) b.alpn.push_back("p" + std::to_string(i));
  auto hello = ReadTlsClientHello(b.Build());
  ASSERT_FALSE(hello);
  EXPECT_EQ(hello.error().code, ErrorCode::kTooLarge);
}

// Cutting the hello anywhere must wait or fail, never yield a name; every cut inside the record
// must ask for exactly the record's size (so the filter knows how long to hold).
TEST(ClientHelloTest, EveryTruncationWaitsOrFails) {
  HelloBuilder b;
  b.sni = "example.com";
  b.alpn = {"h2"};
  Bytes full = b.Build();
  for (size_t n = 0; n < full.size(); ++n) {
    size_t needed = 0;
    auto hello = ReadTlsClientHello(std::span(full).first(n), &needed);
    ASSERT_FALSE(hello) << n;
    EXPECT_EQ(hello.error().code, ErrorCode::kUnavailable) << n << ": " << hello.error().message;
    EXPECT_EQ(needed, n < 5 ? 5 : full.size()) << n;
    EXPECT_EQ(Classify(std::span(full).first(n)),
              n == 0 ? FirstBytesKind::kUnknown : FirstBytesKind::kTls);
  }
}

// Shrinking an inner length while keeping the outer ones (and so the byte count) the same must be
// caught as malformed at every length field, never read past or returned as a shorter name.
TEST(ClientHelloTest, EveryCorruptedByteFailsOrKeepsTheName) {
  HelloBuilder b;
  b.sni = "example.com";
  b.alpn = {"h2"};
  Bytes full = b.Build();
  std::string_view name = "example.com";
  size_t name_at =
      std::string_view(reinterpret_cast<const char*>(full.data()), full.size()).find(name);
  ASSERT_NE(name_at, std::string_view::npos);
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t v : {0x00, 0x01, 0x7f, 0xff}) {
      Bytes bent = full;
      bent[i] = v;
      auto hello = ReadTlsClientHello(bent);
      if (!hello || hello->server_name.empty()) continue;
      // Only a change inside the name itself may change the name.
      bool inside_name = i >= name_at && i < name_at + name.size();
      if (!inside_name) {
        EXPECT_EQ(hello->server_name, name) << "byte " << i;
      }
    }
  }
}

TEST(ClientHelloTest, OversizeLengths) {
  HelloBuilder b;
  b.sni = "example.com";
  Bytes full = b.Build();

  Bytes big_record = full;  // record length 0xffff > 2^14
  big_record[3] = 0xff;
  big_record[4] = 0xff;
  auto r = ReadTlsClientHello(big_record);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);

  Bytes big_handshake = full;  // handshake longer than its record
  big_handshake[6] = 0x01;
  r = ReadTlsClientHello(big_handshake);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);

  HelloBuilder long_session;
  long_session.session_id_len = 33;
  r = ReadTlsClientHello(long_session.Build());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);

  // server_name list length larger than its extension.
  Bytes bad_list = HelloBuilder::SniExtension("example.com");
  bad_list[5] += 1;
  HelloBuilder with_bad;
  with_bad.extra_extensions.push_back(bad_list);
  r = ReadTlsClientHello(with_bad.Build());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);
}

TEST(ClientHelloTest, NotTls) {
  for (const Bytes& bytes :
       {Text("GET / HTTP/1.1\r\n"), Bytes{22, 2, 0}, Bytes{22, 3, 5}, Bytes{23, 3, 3, 0, 0}}) {
    auto r = ReadTlsClientHello(bytes);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::kProtocol) << r.error().message;
  }
  Bytes server_hello{22, 3, 3, 0, 4, 2, 0, 0, 0};
  auto r = ReadTlsClientHello(server_hello);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kMalformed);
}

Expected<std::string> Host(std::string_view request, size_t* needed = nullptr) {
  return ReadHttpHost(Text(request), needed);
}

void ExpectHost(std::string_view request, std::string_view host) {
  auto got = Host(request);
  ASSERT_TRUE(got) << request << ": " << got.error().message;
  EXPECT_EQ(*got, host) << request;
}

void ExpectError(std::string_view request, ErrorCode code) {
  auto got = Host(request);
  ASSERT_FALSE(got) << request << " gave " << *got;
  EXPECT_EQ(got.error().code, code) << request << ": " << got.error().message;
}

TEST(HttpHostTest, Variants) {
  ExpectHost("GET / HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n", "example.com");
  ExpectHost("GET / HTTP/1.1\r\nhost:example.com:8080\r\n\r\n", "example.com");
  ExpectHost("GET / HTTP/1.1\r\nHOST: \t example.com \t\r\n\r\n", "example.com");
  ExpectHost("GET / HTTP/1.0\r\nHost: 192.0.2.7:80\r\n\r\n", "192.0.2.7");
  ExpectHost("GET / HTTP/1.1\r\nHost: [2001:DB8::1]:8080\r\n\r\n", "2001:db8::1");
  ExpectHost("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "::1");
  ExpectHost("GET http://Example.com:81/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com");
  ExpectHost("GET http://example.com/ HTTP/1.1\r\n\r\n", "example.com");
  ExpectHost("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "example.com");
  ExpectHost("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", "example.com");
  ExpectHost("GET / HTTP/1.1\r\nHost: example.com.\r\n\r\n", "example.com");
  // Bytes after the header block (a body, a pipelined request) are not read.
  ExpectHost("POST / HTTP/1.1\r\nHost: a.example\r\n\r\nHost: b.example\r\n\r\n", "a.example");
}

TEST(HttpHostTest, Errors) {
  ExpectError("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", ErrorCode::kNotFound);
  ExpectError("GET / HTTP/1.1\r\nHost:\r\n\r\n", ErrorCode::kNotFound);
  ExpectError("GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n",
              ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
              ErrorCode::kMalformed);
  ExpectError("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nX: y\r\n Host: a.example\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost: a.example:http\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost: a_b.example\r\n\r\n", ErrorCode::kMalformed);
  ExpectError("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", ErrorCode::kMalformed);
  ExpectError(std::string_view("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 28), ErrorCode::kMalformed);
  ExpectError("GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", ErrorCode::kProtocol);
  ExpectError("\x16\x03\x01\x02\x00", ErrorCode::kProtocol);
  ExpectError("SSH-2.0-OpenSSH_9.2\r\n", ErrorCode::kProtocol);
}

TEST(HttpHostTest, NeedsMoreUntilCrlfCrlf) {
  std::string full = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
  for (size_t n = 0; n < full.size(); ++n) {
    size_t needed = 0;
    auto got = Host(std::string_view(full).substr(0, n), &needed);
    ASSERT_FALSE(got) << n;
    EXPECT_EQ(got.error().code, ErrorCode::kUnavailable) << n << ": " << got.error().message;
    EXPECT_GT(needed, n);
  }
  ExpectHost(full, "example.com");
}

TEST(HttpHostTest, HeaderBlockOverTheBoundIsTooLarge) {
  std::string request = "GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad: ";
  request.append(kMaxHttpHeaderBytes, 'a');
  ExpectError(request, ErrorCode::kTooLarge);
  request += "\r\n\r\n";
  ExpectError(request, ErrorCode::kTooLarge);
}

TEST(ClassifyTest, Kinds) {
  EXPECT_EQ(Classify(Text("GET / HTTP/1.1\r\n")), FirstBytesKind::kHttp);
  EXPECT_EQ(Classify(Text("PO")), FirstBytesKind::kHttp);
  EXPECT_EQ(Classify(Text("CONNECT x:443 HTTP/1.1")), FirstBytesKind::kHttp);
  EXPECT_EQ(Classify(Text("GETX / HTTP/1.1")), FirstBytesKind::kUnknown);
  EXPECT_EQ(Classify(Text("SSH-2.0")), FirstBytesKind::kUnknown);
  EXPECT_EQ(Classify(Bytes{22, 3, 1, 2, 0}), FirstBytesKind::kTls);
  EXPECT_EQ(Classify(Bytes{22, 3, 9}), FirstBytesKind::kUnknown);
  EXPECT_EQ(Classify(Bytes{}), FirstBytesKind::kUnknown);
}

}  // namespace
}  // namespace tollgate::analysis
