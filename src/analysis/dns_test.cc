#include "analysis/dns.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace tollgate::analysis {
namespace {

// Writes DNS messages byte by byte so each test states exactly what is on the wire.
class Wire {
 public:
  // A reply header: QR=1, RD=1, RA=1, opcode QUERY.
  Wire& Header(uint16_t qdcount, uint16_t ancount, uint16_t flags = 0x8180, uint16_t id = 0x1234) {
    return U16(id).U16(flags).U16(qdcount).U16(ancount).U16(0).U16(0);
  }
  Wire& U8(uint8_t v) {
    bytes.push_back(v);
    return *this;
  }
  Wire& U16(uint16_t v) { return U8(static_cast<uint8_t>(v >> 8)).U8(static_cast<uint8_t>(v)); }
  Wire& U32(uint32_t v) {
    return U16(static_cast<uint16_t>(v >> 16)).U16(static_cast<uint16_t>(v));
  }
  // Labels of a dotted name, then the root label unless a pointer follows.
  Wire& Labels(std::string_view dotted) {
    while (!dotted.empty()) {
      const size_t dot = dotted.find('.');
      const std::string_view label = dotted.substr(0, dot);
      U8(static_cast<uint8_t>(label.size()));
      for (char c : label) U8(static_cast<uint8_t>(c));
      dotted = dot == std::string_view::npos ? std::string_view{} : dotted.substr(dot + 1);
    }
    return *this;
  }
  Wire& Name(std::string_view dotted) { return Labels(dotted).U8(0); }
  Wire& Pointer(uint16_t offset) { return U16(static_cast<uint16_t>(0xC000 | offset)); }
  Wire& Question(std::string_view name, uint16_t qtype = 1) { return Name(name).U16(qtype).U16(1); }
  // TYPE, CLASS IN, TTL, RDLENGTH after an owner name the caller wrote.
  Wire& Fixed(uint16_t type, uint32_t ttl, uint16_t rdlength, uint16_t klass = 1) {
    return U16(type).U16(klass).U32(ttl).U16(rdlength);
  }
  Wire& A(std::string_view owner, uint32_t ttl, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    return Name(owner).Fixed(1, ttl, 4).U8(a).U8(b).U8(c).U8(d);
  }
  size_t size() const { return bytes.size(); }

  std::vector<uint8_t> bytes;
};

constexpr size_t kQuestionStart = 12;

Expected<DnsReply> Parse(const Wire& w) { return ParseDnsReply(w.bytes); }

TEST(DnsReply, ParsesAReply) {
  Wire w;
  w.Header(1, 1, 0x8183, 0xBEEF)
      .Question("www.example.com")
      .A("www.example.com", 300, 192, 0, 2, 7);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(reply->id, 0xBEEF);
  EXPECT_EQ(reply->rcode, 3);
  EXPECT_EQ(reply->question, "www.example.com");
  ASSERT_EQ(reply->answers.size(), 1u);
  EXPECT_EQ(reply->answers[0].name, "www.example.com");
  EXPECT_EQ(reply->answers[0].type, DnsRecord::Type::kA);
  EXPECT_EQ(reply->answers[0].address, IpAddress::V4(192, 0, 2, 7));
  EXPECT_EQ(reply->answers[0].ttl, 300u);
}

TEST(DnsReply, ParsesAaaaWithCompressedOwner) {
  Wire w;
  w.Header(1, 1).Question("v6.example.org", 28).Pointer(kQuestionStart).Fixed(28, 60, 16);
  for (uint8_t b : {0x20, 0x01, 0x0d, 0xb8}) w.U8(b);
  for (int i = 0; i < 11; ++i) w.U8(0);
  w.U8(1);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  ASSERT_EQ(reply->answers.size(), 1u);
  EXPECT_EQ(reply->answers[0].name, "v6.example.org");
  EXPECT_EQ(reply->answers[0].type, DnsRecord::Type::kAAAA);
  EXPECT_EQ(reply->answers[0].address, *IpAddress::Parse("2001:db8::1"));
}

TEST(DnsReply, ParsesCnameChainWithSuffixCompression) {
  Wire w;
  w.Header(1, 3).Question("www.example.com");
  // www.example.com CNAME edge.cdn.example.com, written as "edge.cdn" + pointer to example.com.
  const uint16_t example_com = kQuestionStart + 4;  // past "\3www"
  w.Pointer(kQuestionStart).Fixed(5, 100, 0);
  const size_t rdlength_at = w.size() - 2;
  const uint16_t target_at = static_cast<uint16_t>(w.size());
  w.Labels("edge.cdn").Pointer(example_com);
  w.bytes[rdlength_at + 1] = static_cast<uint8_t>(w.size() - target_at);
  // edge.cdn.example.com CNAME a.cdn.example.com: "a" + pointer to "cdn.example.com" in the target.
  w.Pointer(target_at).Fixed(5, 50, 4).Labels("a").Pointer(target_at + 5);
  w.Pointer(static_cast<uint16_t>(w.size() - 4)).Fixed(1, 20, 4).U8(198).U8(51).U8(100).U8(1);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  ASSERT_EQ(reply->answers.size(), 3u);
  EXPECT_EQ(reply->answers[0].type, DnsRecord::Type::kCname);
  EXPECT_EQ(reply->answers[0].name, "www.example.com");
  EXPECT_EQ(reply->answers[0].target, "edge.cdn.example.com");
  EXPECT_EQ(reply->answers[1].name, "edge.cdn.example.com");
  EXPECT_EQ(reply->answers[1].target, "a.cdn.example.com");
  EXPECT_EQ(reply->answers[2].name, "a.cdn.example.com");
  EXPECT_EQ(reply->answers[2].address, IpAddress::V4(198, 51, 100, 1));
}

TEST(DnsReply, FoldsCase) {
  Wire w;
  w.Header(1, 1).Question("WwW.ExAmPlE.CoM").A("WWW.EXAMPLE.COM", 1, 10, 0, 0, 1);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(reply->question, "www.example.com");
  EXPECT_EQ(reply->answers[0].name, "www.example.com");
}

TEST(DnsReply, SkipsOtherTypesAndClassesByRdlength) {
  Wire w;
  w.Header(1, 3).Question("example.com");
  w.Name("example.com").Fixed(16, 30, 5).U8(4).U8('t').U8('e').U8('x').U8('t');  // TXT
  w.Name("example.com").Fixed(1, 30, 4, /*klass=*/3).U32(0x01020304);            // A in CHAOS
  w.A("example.com", 30, 10, 0, 0, 2);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  ASSERT_EQ(reply->answers.size(), 1u);
  EXPECT_EQ(reply->answers[0].address, IpAddress::V4(10, 0, 0, 2));
}

TEST(DnsReply, TtlWithTopBitReadsAsZero) {
  Wire w;
  w.Header(1, 1).Question("a.test").A("a.test", 0x80000000u, 10, 0, 0, 1);
  auto reply = Parse(w);
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(reply->answers[0].ttl, 0u);
}

TEST(DnsReply, RejectsEveryTruncation) {
  Wire w;
  w.Header(1, 3).Question("www.example.com");
  w.Pointer(kQuestionStart).Fixed(5, 100, 6).Labels("cdn").Pointer(kQuestionStart + 4);
  w.Name("cdn.example.com").Fixed(28, 60, 16);
  for (int i = 0; i < 16; ++i) w.U8(static_cast<uint8_t>(i));
  w.Pointer(kQuestionStart).Fixed(1, 9, 4).U32(0x0A000001);
  ASSERT_TRUE(Parse(w)) << Parse(w).error().message;
  for (size_t n = 0; n < w.size(); ++n) {
    auto reply = ParseDnsReply(std::span(w.bytes.data(), n));
    ASSERT_FALSE(reply) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(reply.error().code, ErrorCode::kMalformed);
    EXPECT_NE(reply.error().message.find("at offset"), std::string::npos) << reply.error().message;
  }
}

TEST(DnsReply, ErrorsNameSectionAndOffset) {
  Wire w;
  w.Header(1, 1).Question("a.test").Name("a.test").Fixed(1, 9, 5).U32(0).U8(0);
  auto reply = Parse(w);
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().message, "DNS reply: answer 0 at offset 42: A RDLENGTH 5 is not 4");
}

TEST(DnsReply, RejectsPointerLoop) {
  Wire w;
  w.Header(1, 0).Pointer(kQuestionStart).U16(1).U16(1);  // the question points at itself
  auto reply = Parse(w);
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message.find("question at offset 12: compression pointer"),
            std::string::npos)
      << reply.error().message;

  // A label followed by a pointer back to that label: strictly backwards of the pointer, but
  // inside the run it ends, so it would loop forever.
  Wire run;
  run.Header(1, 0).Labels("a").Pointer(kQuestionStart).U16(1).U16(1);
  EXPECT_FALSE(Parse(run));
}

TEST(DnsReply, RejectsForwardPointer) {
  Wire w;
  w.Header(1, 1).Pointer(kQuestionStart + 6).U16(1).U16(1).A("x.test", 1, 1, 2, 3, 4);
  auto reply = Parse(w);
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message.find("does not point before"), std::string::npos)
      << reply.error().message;
}

TEST(DnsReply, RejectsTooManyPointerJumps) {
  // A legal chain of pointers, each to the one before it, longer than kDnsMaxPointerJumps; it
  // sits in a TXT record's RDATA and the A record's owner points at its end.
  Wire msg;
  const size_t chain_len = 2 * (kDnsMaxPointerJumps + 1);
  msg.Header(1, 2).Question("a.test").Name("a.test").Fixed(16, 1, static_cast<uint16_t>(chain_len));
  const uint16_t chain_at = static_cast<uint16_t>(msg.size());
  msg.Pointer(kQuestionStart);
  for (size_t i = 0; i < kDnsMaxPointerJumps; ++i) {
    msg.Pointer(static_cast<uint16_t>(chain_at + 2 * i));
  }
  msg.Pointer(static_cast<uint16_t>(msg.size() - 2)).Fixed(1, 1, 4).U32(0x0A000001);
  auto reply = Parse(msg);
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message.find("compression pointers in one name"), std::string::npos)
      << reply.error().message;
}

TEST(DnsReply, NameLengthBounds) {
  const std::string label63(63, 'a');
  // 4 labels of 63 and the root: 4 * 64 + 1 = 257 bytes, over 255.
  Wire too_long;
  too_long.Header(1, 0).Question(label63 + "." + label63 + "." + label63 + "." + label63);
  auto reply = Parse(too_long);
  ASSERT_FALSE(reply);
  EXPECT_NE(reply.error().message.find("longer than 255"), std::string::npos);

  // 3 * 64 + 62 + 1 = 255 bytes: the longest legal name.
  Wire longest;
  longest.Header(1, 0).Question(label63 + "." + label63 + "." + label63 + "." +
                                std::string(61, 'b'));
  auto ok = Parse(longest);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->question.size(), 253u);

  // A length byte of 64 has the reserved 0b01 prefix.
  Wire label64;
  label64.Header(1, 0).U8(64);
  for (int i = 0; i < 64; ++i) label64.U8('a');
  label64.U8(0).U16(1).U16(1);
  EXPECT_FALSE(Parse(label64));
}

TEST(DnsReply, RejectsDotAndControlBytesInLabels) {
  Wire dot;
  dot.Header(1, 0).U8(3).U8('a').U8('.').U8('b').U8(0).U16(1).U16(1);
  EXPECT_FALSE(Parse(dot));
  Wire nul;
  nul.Header(1, 0).U8(2).U8('a').U8(0).U8(0).U16(1).U16(1);
  EXPECT_FALSE(Parse(nul));
}

TEST(DnsReply, RejectsQueriesOpcodesAndCounts) {
  Wire query;
  query.Header(1, 0, 0x0100).Question("a.test");
  EXPECT_FALSE(Parse(query));
  Wire notify;
  notify.Header(1, 0, 0x8000 | (4 << 11)).Question("a.test");
  EXPECT_FALSE(Parse(notify));
  Wire two_questions;
  two_questions.Header(2, 0).Question("a.test").Question("b.test");
  EXPECT_FALSE(Parse(two_questions));
  Wire many;
  many.Header(1, kDnsMaxAnswers + 1).Question("a.test");
  auto reply = Parse(many);
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, ErrorCode::kTooLarge);
}

TEST(DnsReply, RejectsCnameNotFillingRdata) {
  Wire w;
  w.Header(1, 1).Question("a.test").Name("a.test").Fixed(5, 1, 9).Name("b.test").U8(0);
  EXPECT_FALSE(Parse(w));
}

TEST(DnsReply, RejectsOversizedMessage) {
  std::vector<uint8_t> big(kDnsMaxMessageBytes + 1, 0);
  auto reply = ParseDnsReply(big);
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().code, ErrorCode::kTooLarge);
}

}  // namespace
}  // namespace tollgate::analysis
