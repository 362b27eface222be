// Tests of the nDPI-backed classifier against real nDPI 4.2: what it names for real first bytes
// of TLS, HTTP, SSH and DNS clients, what it does with junk, empty and large payloads, IPv6, and
// that one flow's answer does not depend on the flows classified before it.
#include "analysis/ndpi_classifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tollgate::analysis {
namespace {

using Bytes = std::vector<uint8_t>;
using ::testing::Contains;
using ::testing::IsEmpty;

// Real ClientHellos, captured once from `openssl s_client -tls1_3 -servername NAME` (OpenSSL 3.0,
// Debian 12) connecting to a local listener that only recorded the bytes.
const Bytes kHelloGoogle = {
    // SNI www.google.com
    0x16, 0x03, 0x01, 0x00, 0xf3, 0x01, 0x00, 0x00, 0xef, 0x03, 0x03, 0x4c, 0xa3, 0x14, 0x59, 0xb9,
    0xef, 0x3e, 0xd2, 0xb0, 0xa4, 0x72, 0xcc, 0x74, 0xe0, 0x6a, 0x30, 0x24, 0xce, 0xa6, 0xbb, 0x5e,
    0x22, 0x6d, 0xc3, 0xdf, 0xbf, 0xa4, 0xf7, 0x8a, 0x05, 0x02, 0x12, 0x20, 0x36, 0xb5, 0xcd, 0x12,
    0xd6, 0x8c, 0x45, 0x7e, 0xda, 0x5f, 0xe9, 0x49, 0xbd, 0xf6, 0x6b, 0xb3, 0xda, 0xe5, 0xe2, 0xee,
    0xbf, 0x92, 0xab, 0x52, 0x0c, 0x01, 0x78, 0xd7, 0x65, 0xa0, 0x6e, 0x59, 0x00, 0x08, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0x9e, 0x00, 0x00, 0x00, 0x13, 0x00, 0x11,
    0x00, 0x00, 0x0e, 0x77, 0x77, 0x77, 0x2e, 0x67, 0x6f, 0x6f, 0x67, 0x6c, 0x65, 0x2e, 0x63, 0x6f,
    0x6d, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00, 0x14, 0x00,
    0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01, 0x02, 0x01,
    0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00,
    0x0d, 0x00, 0x1e, 0x00, 0x1c, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08, 0x08, 0x08,
    0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05, 0x01, 0x06,
    0x01, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33,
    0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0x48, 0x5d, 0xb7, 0xc0, 0x70, 0x20, 0x96, 0x2a,
    0x65, 0xd8, 0x81, 0x50, 0x61, 0x35, 0x47, 0x3f, 0x53, 0x28, 0x9c, 0x1e, 0x3f, 0x29, 0xc7, 0xc6,
    0x21, 0xd3, 0x41, 0xee, 0x7a, 0xe3, 0x42, 0x42,
};
const Bytes kHelloPlain = {
    // SNI tollgate.example
    0x16, 0x03, 0x01, 0x00, 0xf5, 0x01, 0x00, 0x00, 0xf1, 0x03, 0x03, 0x21, 0xa6, 0xa4, 0x8f, 0x2f,
    0xa0, 0x82, 0x4b, 0x37, 0xe3, 0x25, 0x81, 0x75, 0x0c, 0x35, 0xc8, 0x5a, 0x41, 0xd1, 0xd0, 0xb2,
    0xf9, 0x2f, 0x5b, 0x56, 0xab, 0xaa, 0xb4, 0xe8, 0x35, 0x6a, 0x88, 0x20, 0x64, 0xbb, 0x14, 0x16,
    0x39, 0xfd, 0xa0, 0x33, 0xdc, 0xed, 0x3d, 0xe1, 0x30, 0xf8, 0x6a, 0xed, 0x20, 0x0a, 0xb9, 0x45,
    0xac, 0xb4, 0x47, 0x3b, 0x21, 0xc2, 0x61, 0x14, 0x45, 0xff, 0x70, 0xad, 0x00, 0x08, 0x13, 0x02,
    0x13, 0x03, 0x13, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0xa0, 0x00, 0x00, 0x00, 0x15, 0x00, 0x13,
    0x00, 0x00, 0x10, 0x74, 0x6f, 0x6c, 0x6c, 0x67, 0x61, 0x74, 0x65, 0x2e, 0x65, 0x78, 0x61, 0x6d,
    0x70, 0x6c, 0x65, 0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x16, 0x00,
    0x14, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x19, 0x00, 0x18, 0x01, 0x00, 0x01, 0x01, 0x01,
    0x02, 0x01, 0x03, 0x01, 0x04, 0x00, 0x23, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x17, 0x00,
    0x00, 0x00, 0x0d, 0x00, 0x1e, 0x00, 0x1c, 0x04, 0x03, 0x05, 0x03, 0x06, 0x03, 0x08, 0x07, 0x08,
    0x08, 0x08, 0x09, 0x08, 0x0a, 0x08, 0x0b, 0x08, 0x04, 0x08, 0x05, 0x08, 0x06, 0x04, 0x01, 0x05,
    0x01, 0x06, 0x01, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04, 0x00, 0x2d, 0x00, 0x02, 0x01, 0x01,
    0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20, 0x95, 0xa6, 0x14, 0xa9, 0xaf, 0xe2,
    0x2d, 0x46, 0xbd, 0x06, 0x62, 0x0d, 0x69, 0xfc, 0x95, 0x84, 0x20, 0x50, 0x39, 0x45, 0xee, 0x1e,
    0x15, 0xc7, 0xf4, 0x4b, 0x79, 0xa4, 0xeb, 0xbf, 0xd1, 0x5d,
};

Bytes Text(std::string_view s) { return Bytes(s.begin(), s.end()); }

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

// A TLS 1.3-style ClientHello padded (extension 21, RFC 7685) to `record_bytes`, with the SNI
// after the padding: nDPI must reassemble the segments to read the name.
Bytes PaddedHello(std::string_view sni, size_t record_bytes) {
  Bytes tail;       // supported_versions then server_name, after the padding
  Put16(tail, 43);  // supported_versions: TLS 1.3, 1.2
  Put16(tail, 5);
  Put8(tail, 4);
  Put16(tail, 0x0304);
  Put16(tail, 0x0303);
  Put16(tail, 0);  // server_name
  Put16(tail, sni.size() + 5);
  Put16(tail, sni.size() + 3);
  Put8(tail, 0);
  Put16(tail, sni.size());
  tail.insert(tail.end(), sni.begin(), sni.end());
  Bytes body;
  Put16(body, 0x0303);
  for (int i = 0; i < 32; ++i) Put8(body, i);  // random
  Put8(body, 0);                               // no session id
  Put16(body, 4);
  Put16(body, 0x1301);
  Put16(body, 0x1302);
  Put8(body, 1);  // compression: null
  Put8(body, 0);
  // Record header (5), handshake header (4), extensions length (2), padding extension header (4).
  const size_t padding = record_bytes - (5 + 4 + body.size() + 2 + 4 + tail.size());
  Bytes exts;
  Put16(exts, 21);  // padding first, so the name is only in the last segment
  Put16(exts, padding);
  exts.insert(exts.end(), padding, 0);
  Append(exts, tail);
  Put16(body, exts.size());
  Append(body, exts);
  Bytes hello;
  Put8(hello, 22);  // handshake record
  Put16(hello, 0x0301);
  Put16(hello, body.size() + 4);
  Put8(hello, 1);  // ClientHello
  Put24(hello, body.size());
  Append(hello, body);
  return hello;
}

// A DNS query for www.example.com, type A, recursion desired.
Bytes DnsQuery() {
  Bytes q;
  Put16(q, 0x1234);
  Put16(q, 0x0100);
  Put16(q, 1);
  Put16(q, 0);
  Put16(q, 0);
  Put16(q, 0);
  for (std::string_view label : {"www", "example", "com"}) {
    Put8(q, label.size());
    q.insert(q.end(), label.begin(), label.end());
  }
  Put8(q, 0);
  Put16(q, 1);  // A
  Put16(q, 1);  // IN
  return q;
}

Bytes RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Documentation addresses (RFC 5737, RFC 3849), so nDPI's address lists name nothing.
FlowTuple V4(uint8_t protocol, uint16_t dst_port) {
  FlowTuple t;
  t.src = IpAddress::V4(192, 0, 2, 10);
  t.dst = IpAddress::V4(198, 51, 100, 20);
  t.src_port = 51514;
  t.dst_port = dst_port;
  t.protocol = protocol;
  return t;
}

FlowTuple V6(uint8_t protocol, uint16_t dst_port) {
  FlowTuple t;
  t.src = *IpAddress::Parse("2001:db8::10");
  t.dst = *IpAddress::Parse("2001:db8::20");
  t.src_port = 51514;
  t.dst_port = dst_port;
  t.protocol = protocol;
  return t;
}

class NdpiClassifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = NdpiClassifier::Create();
    ASSERT_TRUE(created) << created.error().message;
    classifier_ = std::move(*created);
  }

  AppClassification Classify(const FlowTuple& tuple, const Bytes& bytes) {
    auto result = classifier_->Classify(tuple, bytes);
    EXPECT_TRUE(result) << result.error().message;
    return result ? *result : AppClassification{};
  }

  std::unique_ptr<NdpiClassifier> classifier_;
};

void ExpectSame(const AppClassification& a, const AppClassification& b) {
  EXPECT_EQ(a.protocol, b.protocol);
  EXPECT_EQ(a.master, b.master);
  EXPECT_EQ(a.category, b.category);
  EXPECT_EQ(a.risks, b.risks);
  EXPECT_EQ(a.guessed, b.guessed);
}

const char kNotHttps[] = "TLS (probably) Not Carrying HTTPS";
const char kNonStandardPort[] = "Known Protocol on Non Standard Port";

TEST_F(NdpiClassifierTest, TlsClientHelloIsTls) {
  AppClassification c = Classify(V4(ipproto::kTcp, 443), kHelloPlain);
  EXPECT_EQ(c.protocol, "TLS");
  EXPECT_EQ(c.master, "");
  EXPECT_EQ(c.category, "Web");
  EXPECT_FALSE(c.guessed);
  // openssl s_client offers no ALPN, which nDPI 4.2 reads as "probably not HTTPS".
  EXPECT_EQ(c.risks, std::vector<std::string>{kNotHttps});
  EXPECT_TRUE(MatchesAppProtocol(c, "tls"));
  EXPECT_FALSE(MatchesAppProtocol(c, "HTTP"));
}

TEST_F(NdpiClassifierTest, TlsToKnownServiceNamesTheServiceOverTls) {
  AppClassification c = Classify(V4(ipproto::kTcp, 443), kHelloGoogle);
  EXPECT_EQ(c.protocol, "Google");
  EXPECT_EQ(c.master, "TLS");
  EXPECT_FALSE(c.guessed);
  // A rule on "TLS" matches every TLS flow, a rule on "Google" this one.
  EXPECT_TRUE(MatchesAppProtocol(c, "TLS"));
  EXPECT_TRUE(MatchesAppProtocol(c, "google"));
  EXPECT_FALSE(MatchesAppProtocol(c, "HTTP"));
  EXPECT_FALSE(MatchesAppProtocol(c, ""));
}

TEST_F(NdpiClassifierTest, TlsOnOtherPortCarriesTheNonStandardPortRisk) {
  AppClassification c = Classify(V4(ipproto::kTcp, 8443), kHelloPlain);
  EXPECT_EQ(c.protocol, "TLS");
  EXPECT_THAT(c.risks, Contains(kNonStandardPort));
}

TEST_F(NdpiClassifierTest, HttpGetIsHttp) {
  AppClassification c = Classify(
      V4(ipproto::kTcp, 80),
      Text("GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/7.88.1\r\n"
           "Accept: */*\r\n\r\n"));
  EXPECT_EQ(c.protocol, "HTTP");
  EXPECT_EQ(c.master, "");
  EXPECT_EQ(c.category, "Web");
  EXPECT_FALSE(c.guessed);
  EXPECT_THAT(c.risks, IsEmpty());
}

TEST_F(NdpiClassifierTest, SshBannerIsSsh) {
  AppClassification c = Classify(V4(ipproto::kTcp, 22), Text("SSH-2.0-OpenSSH_9.2\r\n"));
  EXPECT_EQ(c.protocol, "SSH");
  EXPECT_EQ(c.category, "RemoteAccess");
  EXPECT_FALSE(c.guessed);
  EXPECT_THAT(c.risks, IsEmpty());

  AppClassification other_port = Classify(V4(ipproto::kTcp, 2222), Text("SSH-2.0-OpenSSH_9.2\r\n"));
  EXPECT_EQ(other_port.protocol, "SSH");
  EXPECT_THAT(other_port.risks, Contains(kNonStandardPort));
}

TEST_F(NdpiClassifierTest, DnsQueryOverUdpIsDns) {
  AppClassification c = Classify(V4(ipproto::kUdp, 53), DnsQuery());
  EXPECT_EQ(c.protocol, "DNS");
  EXPECT_EQ(c.category, "Network");
  EXPECT_FALSE(c.guessed);
}

TEST_F(NdpiClassifierTest, RandomBytesAreUnknownUnlessThePortSuggestsAGuess) {
  // On a port nDPI associates with nothing, junk is "Unknown" with no category and no risk.
  for (uint8_t protocol : {ipproto::kTcp, ipproto::kUdp}) {
    AppClassification c = Classify(V4(protocol, 40000), RandomBytes(600, 1));
    EXPECT_EQ(c.protocol, "Unknown") << int{protocol};
    EXPECT_EQ(c.master, "");
    EXPECT_EQ(c.category, "");
    EXPECT_FALSE(c.guessed);
    EXPECT_THAT(c.risks, IsEmpty());
  }
  // On 443 nDPI's give-up guesses TLS from the port alone; we mark it as a guess.
  AppClassification on_443 = Classify(V4(ipproto::kTcp, 443), RandomBytes(600, 1));
  EXPECT_EQ(on_443.protocol, "TLS");
  EXPECT_TRUE(on_443.guessed);
}

TEST_F(NdpiClassifierTest, EmptyPayloadIsClassifiedByPortGuessOnly) {
  AppClassification none = Classify(V4(ipproto::kTcp, 40000), {});
  EXPECT_EQ(none.protocol, "Unknown");
  EXPECT_FALSE(none.guessed);
  AppClassification on_443 = Classify(V4(ipproto::kTcp, 443), {});
  EXPECT_EQ(on_443.protocol, "TLS");
  EXPECT_TRUE(on_443.guessed);
}

TEST_F(NdpiClassifierTest, SixteenKibHelloIsReassembledAcrossSegments) {
  // 16384 bytes = 12 segments; the name is only in the last one, so "Google" proves nDPI saw
  // them all, in order.
  Bytes hello = PaddedHello("www.google.com", 16384);
  ASSERT_EQ(hello.size(), 16384u);
  AppClassification c = Classify(V4(ipproto::kTcp, 443), hello);
  EXPECT_EQ(c.protocol, "Google");
  EXPECT_EQ(c.master, "TLS");
  EXPECT_FALSE(c.guessed);
}

TEST_F(NdpiClassifierTest, PayloadOverTheBoundIsCutNotRefused) {
  for (uint8_t protocol : {ipproto::kTcp, ipproto::kUdp}) {
    auto c =
        classifier_->Classify(V4(protocol, 40000), RandomBytes(kNdpiMaxClassifyBytes + 4096, 7));
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->protocol, "Unknown");
  }
  // An HTTP request followed by more than the bound is still HTTP.
  Bytes big =
      Text("POST /upload HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 100000\r\n\r\n");
  big.resize(100000, 'a');
  EXPECT_EQ(Classify(V4(ipproto::kTcp, 80), big).protocol, "HTTP");
}

TEST_F(NdpiClassifierTest, Ipv6FlowsAreClassified) {
  AppClassification tls = Classify(V6(ipproto::kTcp, 443), kHelloGoogle);
  EXPECT_EQ(tls.protocol, "Google");
  EXPECT_EQ(tls.master, "TLS");
  EXPECT_EQ(Classify(V6(ipproto::kUdp, 53), DnsQuery()).protocol, "DNS");
  EXPECT_EQ(Classify(V6(ipproto::kTcp, 22), Text("SSH-2.0-OpenSSH_9.2\r\n")).protocol, "SSH");
}

TEST_F(NdpiClassifierTest, OtherIpProtocolsGetThePayloadAfterTheIpHeader) {
  FlowTuple icmp = V4(ipproto::kIcmp, 0);
  icmp.src_port = 8;  // echo request
  AppClassification c = Classify(icmp, RandomBytes(56, 3));
  EXPECT_EQ(c.protocol, "ICMP");
}

TEST_F(NdpiClassifierTest, TupleWithoutMatchingFamiliesIsACallerError) {
  FlowTuple mixed = V4(ipproto::kTcp, 443);
  mixed.dst = *IpAddress::Parse("2001:db8::20");
  auto c = classifier_->Classify(mixed, kHelloPlain);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(c.error().message, ::testing::HasSubstr("192.0.2.10"));

  FlowTuple unset;
  unset.protocol = ipproto::kTcp;
  EXPECT_FALSE(classifier_->Classify(unset, kHelloPlain));
}

TEST_F(NdpiClassifierTest, SameBytesTwiceGiveTheSameAnswer) {
  const FlowTuple tls = V4(ipproto::kTcp, 443);
  const FlowTuple http = V4(ipproto::kTcp, 80);
  const Bytes get = Text("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
  AppClassification first_tls = Classify(tls, kHelloPlain);
  AppClassification first_http = Classify(http, get);
  AppClassification first_junk = Classify(V4(ipproto::kTcp, 40000), RandomBytes(600, 1));
  // Interleave, so a flow state left behind by one would show in the next.
  for (int i = 0; i < 3; ++i) {
    ExpectSame(Classify(http, get), first_http);
    ExpectSame(Classify(tls, kHelloPlain), first_tls);
    ExpectSame(Classify(V4(ipproto::kTcp, 40000), RandomBytes(600, 1)), first_junk);
  }
  // A half ClientHello must not be completed by the previous flow's bytes.
  Bytes half(kHelloGoogle.begin(), kHelloGoogle.begin() + kHelloGoogle.size() / 2);
  (void)Classify(tls, kHelloGoogle);
  AppClassification c = Classify(V4(ipproto::kTcp, 40000), half);
  EXPECT_NE(c.protocol, "Google");
}

// nDPI's module remembers BitTorrent endpoints (address and port) in an LRU cache: after one
// handshake, junk touching either endpoint comes back "BitTorrent". That answer is not from the
// bytes, so it must be marked as a guess, while the handshake itself is not.
TEST_F(NdpiClassifierTest, AnswersFromNdpisMemoryOfEarlierFlowsAreMarkedAsGuesses) {
  FlowTuple peers = V4(ipproto::kTcp, 40001);
  peers.src = IpAddress::V4(203, 0, 113, 1);
  peers.dst = IpAddress::V4(203, 0, 113, 2);
  FlowTuple same_client = peers;  // same client address and port, another server
  same_client.dst = IpAddress::V4(203, 0, 113, 3);
  FlowTuple strangers = peers;
  strangers.src = IpAddress::V4(203, 0, 113, 4);
  strangers.dst = IpAddress::V4(203, 0, 113, 5);
  EXPECT_EQ(Classify(same_client, RandomBytes(600, 1)).protocol, "Unknown");

  Bytes handshake = Text(
      "\x13"
      "BitTorrent protocol");
  handshake.resize(handshake.size() + 8, 0);     // reserved
  handshake.resize(handshake.size() + 40, 'x');  // info hash and peer id
  AppClassification bt = Classify(peers, handshake);
  EXPECT_EQ(bt.protocol, "BitTorrent");
  EXPECT_FALSE(bt.guessed);
  // Again, now that the endpoints are in the cache: still decided by the bytes.
  EXPECT_FALSE(Classify(peers, handshake).guessed);

  AppClassification junk = Classify(same_client, RandomBytes(600, 1));
  EXPECT_EQ(junk.protocol, "BitTorrent");
  EXPECT_TRUE(junk.guessed);
  EXPECT_EQ(Classify(strangers, RandomBytes(600, 1)).protocol, "Unknown");
  // Real bytes win over the memory.
  FlowTuple tls = peers;
  tls.dst_port = 443;
  AppClassification hello = Classify(tls, kHelloPlain);
  EXPECT_EQ(hello.protocol, "TLS");
  EXPECT_FALSE(hello.guessed);
}

TEST_F(NdpiClassifierTest, ConcurrentCallersAreSerialised) {
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t, &wrong] {
      const Bytes get = Text("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n");
      for (int i = 0; i < 100; ++i) {
        auto tls = classifier_->Classify(V4(ipproto::kTcp, 443), kHelloGoogle);
        auto http = classifier_->Classify(V4(ipproto::kTcp, 80), get);
        if (!tls || tls->protocol != "Google" || !http || http->protocol != "HTTP") ++wrong[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

TEST_F(NdpiClassifierTest, KnowsEveryNameOfTheModuleCaseInsensitively) {
  EXPECT_TRUE(classifier_->KnowsProtocol("tls"));
  EXPECT_TRUE(classifier_->KnowsProtocol("HTTP"));
  EXPECT_TRUE(classifier_->KnowsProtocol("BitTorrent"));
  EXPECT_TRUE(classifier_->KnowsProtocol("bittorrent"));
  EXPECT_TRUE(classifier_->KnowsProtocol("Google"));
  EXPECT_TRUE(classifier_->KnowsProtocol("Unknown"));
  EXPECT_FALSE(classifier_->KnowsProtocol("nonsense"));
  EXPECT_FALSE(classifier_->KnowsProtocol(""));
  EXPECT_FALSE(classifier_->KnowsProtocol("TLS "));
  EXPECT_FALSE(classifier_->KnowsProtocol("FREE_64"));  // a free id's placeholder name
  // nDPI 4.2 knows 282 protocol ids, one of them a placeholder; every name is listed once.
  const auto& names = classifier_->protocol_names();
  EXPECT_GT(names.size(), 250u);
  for (const std::string& n : names) EXPECT_TRUE(classifier_->KnowsProtocol(n)) << n;
}

TEST_F(NdpiClassifierTest, SuggestsTheNearestNameOnlyWhenClose) {
  EXPECT_EQ(classifier_->Suggest("Bittorent"), "BitTorrent");
  EXPECT_EQ(classifier_->Suggest("tls"), "TLS");
  EXPECT_EQ(classifier_->Suggest("HTPP"), "HTTP");
  EXPECT_EQ(classifier_->Suggest("nonsense"), "");
  EXPECT_EQ(classifier_->Suggest("qqqqqqqqqq"), "");
  EXPECT_EQ(classifier_->Suggest(""), "");
}

}  // namespace
}  // namespace tollgate::analysis
