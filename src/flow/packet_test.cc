#include "flow/packet.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <unordered_set>
#include <vector>

namespace tollgate::flow {
namespace {

using Bytes = std::vector<uint8_t>;
using ::testing::HasSubstr;

void Put16(Bytes& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq, const Bytes& options = {},
          const Bytes& payload = {}) {
  Bytes b(20, 0);
  Put16(b, 0, sport);
  Put16(b, 2, dport);
  b[4] = static_cast<uint8_t>(seq >> 24);
  b[5] = static_cast<uint8_t>(seq >> 16);
  b[6] = static_cast<uint8_t>(seq >> 8);
  b[7] = static_cast<uint8_t>(seq);
  b[12] = static_cast<uint8_t>(((20 + options.size()) / 4) << 4);
  b[13] = flags;
  Put16(b, 14, 65535);
  b.insert(b.end(), options.begin(), options.end());
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes Udp(uint16_t sport, uint16_t dport, const Bytes& payload, int length_override = -1) {
  Bytes b(8, 0);
  Put16(b, 0, sport);
  Put16(b, 2, dport);
  Put16(b, 4,
        length_override >= 0 ? static_cast<uint16_t>(length_override)
                             : static_cast<uint16_t>(8 + payload.size()));
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes Icmp(uint8_t type, uint8_t code, uint16_t id, const Bytes& payload = {}) {
  Bytes b(8, 0);
  b[0] = type;
  b[1] = code;
  Put16(b, 4, id);
  Put16(b, 6, 1);  // sequence
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

struct V4Opts {
  Bytes options;
  uint16_t frag = 0;  // flags + offset field as on the wire
  int total_length = -1;
};
V4Opts WithOptions(Bytes options) {
  V4Opts o;
  o.options = std::move(options);
  return o;
}
V4Opts WithFrag(uint16_t frag) {
  V4Opts o;
  o.frag = frag;
  return o;
}
V4Opts WithTotalLength(int total_length) {
  V4Opts o;
  o.total_length = total_length;
  return o;
}

Bytes Ipv4(uint8_t proto, const Bytes& l4, const V4Opts& o = {}) {
  Bytes b(20, 0);
  b[0] = static_cast<uint8_t>(0x40 | ((20 + o.options.size()) / 4));
  Put16(b, 4, 0x1234);
  Put16(b, 6, o.frag);
  b[8] = 64;
  b[9] = proto;
  b[12] = 10, b[13] = 0, b[14] = 0, b[15] = 1;
  b[16] = 192, b[17] = 0, b[18] = 2, b[19] = 7;
  b.insert(b.end(), o.options.begin(), o.options.end());
  b.insert(b.end(), l4.begin(), l4.end());
  Put16(b, 2,
        o.total_length >= 0 ? static_cast<uint16_t>(o.total_length)
                            : static_cast<uint16_t>(b.size()));
  return b;
}

// `chain` is the extension headers already encoded; `first_next` is the IPv6 Next Header field.
Bytes Ipv6(uint8_t first_next, const Bytes& chain_and_l4, int payload_length = -1) {
  Bytes b(40, 0);
  b[0] = 0x60;
  Put16(b, 4,
        payload_length >= 0 ? static_cast<uint16_t>(payload_length)
                            : static_cast<uint16_t>(chain_and_l4.size()));
  b[6] = first_next;
  b[7] = 64;
  b[8] = 0x20, b[9] = 0x01, b[10] = 0x0d, b[11] = 0xb8, b[23] = 1;    // 2001:db8::1
  b[24] = 0x20, b[25] = 0x01, b[26] = 0x0d, b[27] = 0xb8, b[39] = 2;  // 2001:db8::2
  b.insert(b.end(), chain_and_l4.begin(), chain_and_l4.end());
  return b;
}

// Generic extension header (hop-by-hop, routing, destination options): `units` 8-byte units.
Bytes Ext(uint8_t next, size_t units = 1) {
  Bytes b(units * 8, 0);
  b[0] = next;
  b[1] = static_cast<uint8_t>(units - 1);
  if (b.size() >= 4) b[2] = 1, b[3] = static_cast<uint8_t>(b.size() - 4);  // one PadN option
  return b;
}

Bytes Frag(uint8_t next, uint16_t offset_bytes, bool more) {
  Bytes b(8, 0);
  b[0] = next;
  Put16(b, 2, static_cast<uint16_t>(offset_bytes | (more ? 1 : 0)));
  b[4] = 0xde, b[5] = 0xad, b[6] = 0xbe, b[7] = 0xef;
  return b;
}

Bytes Ah(uint8_t next, uint8_t words_minus_2) {
  Bytes b((words_minus_2 + 2) * 4, 0);
  b[0] = next;
  b[1] = words_minus_2;
  return b;
}

ParsedPacket MustParse(const Bytes& b) {
  auto parsed = ParsePacket(b);
  EXPECT_TRUE(parsed.has_value()) << (parsed ? "" : parsed.error().message);
  return parsed ? *parsed : ParsedPacket{};
}

std::string ErrorOf(const Bytes& b) {
  auto parsed = ParsePacket(b);
  EXPECT_FALSE(parsed.has_value());
  return parsed ? std::string() : parsed.error().message;
}

Bytes Payload(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>('a' + i % 26);
  return b;
}

TEST(ParsePacketTest, Ipv4TcpSyn) {
  const Bytes pkt =
      Ipv4(ipproto::kTcp, Tcp(40000, 443, tcpflag::kSyn, 0x01020304, {0x02, 0x04, 0x05, 0xb4}));
  ParsedPacket p = MustParse(pkt);
  EXPECT_EQ(p.tuple.src, IpAddress::V4(10, 0, 0, 1));
  EXPECT_EQ(p.tuple.dst, IpAddress::V4(192, 0, 2, 7));
  EXPECT_EQ(p.tuple.protocol, ipproto::kTcp);
  EXPECT_EQ(p.tuple.src_port, 40000);
  EXPECT_EQ(p.tuple.dst_port, 443);
  EXPECT_EQ(p.tcp_flags, tcpflag::kSyn);
  EXPECT_EQ(p.tcp_seq, 0x01020304u);
  EXPECT_TRUE(p.payload.empty());
  EXPECT_TRUE(p.has_transport);
  EXPECT_FALSE(p.is_fragment);
  EXPECT_FALSE(p.truncated);
  EXPECT_EQ(p.network_header_len, 20);
  EXPECT_EQ(p.ip_length, pkt.size());
  EXPECT_TRUE(IsNewFlowPacket(p));
}

TEST(ParsePacketTest, Ipv4TcpDataWithIpOptions) {
  const Bytes data = Payload(37);
  const Bytes pkt = Ipv4(ipproto::kTcp, Tcp(1234, 80, tcpflag::kAck | tcpflag::kPsh, 7, {}, data),
                         WithOptions({0x01, 0x01, 0x01, 0x00}));
  ParsedPacket p = MustParse(pkt);
  EXPECT_EQ(p.network_header_len, 24);
  EXPECT_EQ(p.tuple.dst_port, 80);
  EXPECT_EQ(Bytes(p.payload.begin(), p.payload.end()), data);
  // The payload points into the caller's buffer: zero copy.
  EXPECT_EQ(p.payload.data(), pkt.data() + 24 + 20);
  EXPECT_FALSE(IsNewFlowPacket(p));
}

TEST(ParsePacketTest, TcpSynAckAndRstAreNotNewFlows) {
  EXPECT_FALSE(
      IsNewFlowPacket(MustParse(Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn | tcpflag::kAck, 0)))));
  EXPECT_FALSE(IsNewFlowPacket(MustParse(Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kRst, 0)))));
  // SYN with ECN negotiation bits is still a new flow.
  EXPECT_TRUE(IsNewFlowPacket(
      MustParse(Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn | tcpflag::kEce | tcpflag::kCwr, 0)))));
}

TEST(ParsePacketTest, Ipv4Udp) {
  const Bytes data = Payload(12);
  const Bytes pkt = Ipv4(ipproto::kUdp, Udp(5353, 53, data));  // the parse points into it
  ParsedPacket p = MustParse(pkt);
  EXPECT_EQ(p.tuple.protocol, ipproto::kUdp);
  EXPECT_EQ(p.tuple.src_port, 5353);
  EXPECT_EQ(p.tuple.dst_port, 53);
  EXPECT_EQ(Bytes(p.payload.begin(), p.payload.end()), data);
  EXPECT_TRUE(IsNewFlowPacket(p));
}

TEST(ParsePacketTest, UdpLengthFieldBoundsThePayload) {
  // Trailing bytes after the UDP datagram (UDP length < IP payload) are not payload.
  Bytes l4 = Udp(1, 2, Payload(10), 8 + 4);
  ParsedPacket p = MustParse(Ipv4(ipproto::kUdp, l4));
  EXPECT_EQ(p.payload.size(), 4u);
  EXPECT_THAT(ErrorOf(Ipv4(ipproto::kUdp, Udp(1, 2, Payload(4), 100))),
              HasSubstr("udp: length field 100 exceeds the 12 bytes"));
  EXPECT_THAT(ErrorOf(Ipv4(ipproto::kUdp, Udp(1, 2, Payload(4), 5))),
              HasSubstr("udp: length field 5 below the 8-byte header"));
  // 0 (jumbogram / UDP GSO): trust the IP length.
  EXPECT_EQ(MustParse(Ipv4(ipproto::kUdp, Udp(1, 2, Payload(9), 0))).payload.size(), 9u);
}

TEST(ParsePacketTest, Ipv4IcmpEcho) {
  ParsedPacket p = MustParse(Ipv4(ipproto::kIcmp, Icmp(8, 0, 0x4242, Payload(56))));
  EXPECT_EQ(p.tuple.protocol, ipproto::kIcmp);
  EXPECT_EQ(p.tuple.src_port, 8);  // type
  EXPECT_EQ(p.tuple.dst_port, 0);  // code
  EXPECT_EQ(p.echo_id, 0x4242);
  EXPECT_EQ(p.payload.size(), 56u);
  EXPECT_TRUE(IsNewFlowPacket(p));
  // Port unreachable: no identifier.
  ParsedPacket unreach = MustParse(Ipv4(ipproto::kIcmp, Icmp(3, 3, 0x4242)));
  EXPECT_EQ(unreach.tuple.src_port, 3);
  EXPECT_EQ(unreach.tuple.dst_port, 3);
  EXPECT_EQ(unreach.echo_id, 0);
}

TEST(ParsePacketTest, Ipv4UnknownProtocolIsNotAnError) {
  ParsedPacket p = MustParse(Ipv4(132 /* SCTP */, Payload(16)));
  EXPECT_EQ(p.tuple.protocol, 132);
  EXPECT_FALSE(p.has_transport);
  EXPECT_EQ(p.payload.size(), 16u);
  EXPECT_FALSE(IsNewFlowPacket(p));
  // ICMPv6 inside IPv4 is not ICMP; it is reported raw rather than misread.
  EXPECT_FALSE(MustParse(Ipv4(ipproto::kIcmpV6, Icmp(128, 0, 1))).has_transport);
}

TEST(ParsePacketTest, Ipv4Fragments) {
  // First fragment: MF set, offset 0; the transport header is there.
  ParsedPacket first =
      MustParse(Ipv4(ipproto::kUdp, Udp(1000, 2000, Payload(16), 3000), WithFrag(0x2000)));
  EXPECT_TRUE(first.is_fragment);
  EXPECT_TRUE(first.has_transport);
  EXPECT_EQ(first.fragment_offset, 0);
  EXPECT_EQ(first.tuple.dst_port, 2000);  // UDP length of the whole datagram is no error here
  // Later fragment: no transport header, protocol still known.
  ParsedPacket later = MustParse(Ipv4(ipproto::kUdp, Payload(24), WithFrag(185)));
  EXPECT_TRUE(later.is_fragment);
  EXPECT_FALSE(later.has_transport);
  EXPECT_EQ(later.fragment_offset, 185 * 8);
  EXPECT_EQ(later.tuple.protocol, ipproto::kUdp);
  EXPECT_EQ(later.tuple.src_port, 0);
  EXPECT_EQ(later.payload.size(), 24u);
  EXPECT_FALSE(IsNewFlowPacket(later));
  // DF alone is not a fragment.
  EXPECT_FALSE(MustParse(Ipv4(ipproto::kUdp, Udp(1, 2, {}), WithFrag(0x4000))).is_fragment);
  // A tiny first fragment that splits the TCP header (RFC 1858 attack) is malformed.
  Bytes tcp = Tcp(1, 2, tcpflag::kSyn, 0);
  tcp.resize(8);
  EXPECT_THAT(ErrorOf(Ipv4(ipproto::kTcp, tcp, WithFrag(0x2000))),
              HasSubstr("tcp: header needs 20 bytes, packet has 8"));
}

TEST(ParsePacketTest, Ipv4HeaderErrors) {
  EXPECT_THAT(ErrorOf({}), HasSubstr("ip: empty packet"));
  Bytes v5 = Ipv4(ipproto::kUdp, Udp(1, 2, {}));
  v5[0] = 0x55;
  EXPECT_THAT(ErrorOf(v5), HasSubstr("ip: version 5 is neither 4 nor 6"));
  Bytes short_ihl = Ipv4(ipproto::kUdp, Udp(1, 2, {}));
  short_ihl[0] = 0x44;
  EXPECT_THAT(ErrorOf(short_ihl),
              HasSubstr("ipv4: header length 16 bytes below the 20-byte minimum"));
  Bytes long_ihl = Ipv4(ipproto::kUdp, {});
  long_ihl[0] = 0x4f;
  EXPECT_THAT(ErrorOf(long_ihl),
              HasSubstr("ipv4: header with options needs 60 bytes, packet has 20"));
  EXPECT_THAT(ErrorOf(Ipv4(ipproto::kUdp, Udp(1, 2, {}), WithTotalLength(19))),
              HasSubstr("ipv4: total length 19 below header length 20"));
  Bytes bad_doff = Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn, 0));
  bad_doff[20 + 12] = 0x40;
  EXPECT_THAT(ErrorOf(bad_doff), HasSubstr("tcp: data offset 16 bytes below the 20-byte minimum"));
  Bytes long_doff = Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn, 0));
  long_doff[20 + 12] = 0xf0;
  EXPECT_THAT(ErrorOf(long_doff),
              HasSubstr("tcp: options truncated: data offset 60 bytes, packet has 20"));
}

TEST(ParsePacketTest, CaptureShorterThanPacketIsTruncatedNotMalformed) {
  // NFQUEUE's copy_range cuts the capture but the IP header keeps the real length.
  Bytes pkt = Ipv4(ipproto::kTcp, Tcp(1, 443, tcpflag::kAck, 0, {}, Payload(1000)));
  pkt.resize(20 + 20 + 100);
  ParsedPacket p = MustParse(pkt);
  EXPECT_TRUE(p.truncated);
  EXPECT_EQ(p.payload.size(), 100u);
  EXPECT_EQ(p.ip_length, 1040u);
  // Extra bytes after the IP length (never from NFQUEUE, but possible from a fuzzer) are ignored.
  Bytes padded = Ipv4(ipproto::kUdp, Udp(1, 2, Payload(4)));
  padded.resize(padded.size() + 10, 0xee);
  EXPECT_EQ(MustParse(padded).payload.size(), 4u);
}

TEST(ParsePacketTest, ZeroLengthFieldsMeanGsoSuperPackets) {
  // IPv4 BIG TCP: total length 0, the capture is the packet.
  ParsedPacket v4 = MustParse(
      Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kAck, 0, {}, Payload(50)), WithTotalLength(0)));
  EXPECT_EQ(v4.payload.size(), 50u);
  EXPECT_FALSE(v4.truncated);
  ParsedPacket v6 = MustParse(Ipv6(ipproto::kTcp, Tcp(1, 2, tcpflag::kAck, 0, {}, Payload(50)), 0));
  EXPECT_EQ(v6.payload.size(), 50u);
}

TEST(ParsePacketTest, Ipv6TcpUdpIcmp) {
  ParsedPacket tcp = MustParse(Ipv6(ipproto::kTcp, Tcp(50000, 22, tcpflag::kSyn, 99)));
  EXPECT_EQ(tcp.tuple.src, *IpAddress::Parse("2001:db8::1"));
  EXPECT_EQ(tcp.tuple.dst, *IpAddress::Parse("2001:db8::2"));
  EXPECT_EQ(tcp.tuple.dst_port, 22);
  EXPECT_EQ(tcp.network_header_len, 40);
  EXPECT_TRUE(IsNewFlowPacket(tcp));

  ParsedPacket udp = MustParse(Ipv6(ipproto::kUdp, Udp(53, 40001, Payload(30))));
  EXPECT_EQ(udp.tuple.src_port, 53);
  EXPECT_EQ(udp.payload.size(), 30u);

  ParsedPacket icmp = MustParse(Ipv6(ipproto::kIcmpV6, Icmp(128, 0, 0x77, Payload(8))));
  EXPECT_EQ(icmp.tuple.protocol, ipproto::kIcmpV6);
  EXPECT_EQ(icmp.tuple.src_port, 128);
  EXPECT_EQ(icmp.echo_id, 0x77);
  EXPECT_TRUE(IsNewFlowPacket(icmp));
  // ICMP (v4) inside IPv6 is not read as ICMP.
  EXPECT_FALSE(MustParse(Ipv6(ipproto::kIcmp, Icmp(8, 0, 1))).has_transport);
}

TEST(ParsePacketTest, Ipv6ExtensionHeaderChain) {
  // hop-by-hop -> routing (24 bytes) -> destination options -> AH -> TCP
  const Bytes chain = Cat({Ext(43), Ext(60, 3), Ext(51), Ah(ipproto::kTcp, 4),
                           Tcp(1, 8443, tcpflag::kSyn, 0, {}, Payload(5))});
  ParsedPacket p = MustParse(Ipv6(0, chain));
  EXPECT_EQ(p.tuple.protocol, ipproto::kTcp);
  EXPECT_EQ(p.tuple.dst_port, 8443);
  EXPECT_EQ(p.network_header_len, 40 + 8 + 24 + 8 + 24);
  EXPECT_EQ(p.payload.size(), 5u);
  EXPECT_FALSE(p.is_fragment);
}

TEST(ParsePacketTest, Ipv6ExtensionHeaderBound) {
  // Exactly the bound still parses; one more is refused with kTooLarge.
  Bytes ok_chain;
  for (int i = 0; i < kMaxIpv6ExtensionHeaders - 1; ++i) ok_chain = Cat({ok_chain, Ext(60)});
  ok_chain = Cat({ok_chain, Ext(ipproto::kUdp), Udp(1, 2, {})});
  EXPECT_TRUE(ParsePacket(Ipv6(60, ok_chain)).has_value());

  Bytes long_chain;
  for (int i = 0; i < kMaxIpv6ExtensionHeaders; ++i) long_chain = Cat({long_chain, Ext(60)});
  long_chain = Cat({long_chain, Ext(ipproto::kUdp), Udp(1, 2, {})});
  auto parsed = ParsePacket(Ipv6(60, long_chain));
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code, ErrorCode::kTooLarge);
  EXPECT_THAT(parsed.error().message, HasSubstr("more than 8 extension headers"));
}

TEST(ParsePacketTest, Ipv6ExtensionHeaderRunsPastEnd) {
  Bytes routing = Ext(ipproto::kUdp, 1);
  routing[1] = 4;  // claims 40 bytes
  EXPECT_THAT(
      ErrorOf(Ipv6(43, Cat({routing, Udp(1, 2, {})}))),
      HasSubstr("ipv6: routing extension header at offset 40 is 40 bytes, packet has 16 left"));
  EXPECT_THAT(ErrorOf(Ipv6(0, Bytes{17, 0, 0})),
              HasSubstr("ipv6: hop-by-hop extension header at offset 40 truncated"));
}

TEST(ParsePacketTest, Ipv6Fragments) {
  // First fragment behind a hop-by-hop header: transport is parsed.
  ParsedPacket first =
      MustParse(Ipv6(0, Cat({Ext(44), Frag(ipproto::kUdp, 0, true), Udp(7, 9, Payload(8), 4000)})));
  EXPECT_TRUE(first.is_fragment);
  EXPECT_TRUE(first.has_transport);
  EXPECT_EQ(first.tuple.dst_port, 9);
  // Later fragment: protocol from the fragment header, no ports, no walking further.
  ParsedPacket later = MustParse(Ipv6(44, Cat({Frag(ipproto::kTcp, 1448, false), Payload(64)})));
  EXPECT_TRUE(later.is_fragment);
  EXPECT_FALSE(later.has_transport);
  EXPECT_EQ(later.fragment_offset, 1448);
  EXPECT_EQ(later.tuple.protocol, ipproto::kTcp);
  EXPECT_EQ(later.payload.size(), 64u);
  EXPECT_FALSE(IsNewFlowPacket(later));
  // Atomic fragment (RFC 6946): a whole packet.
  ParsedPacket atomic =
      MustParse(Ipv6(44, Cat({Frag(ipproto::kTcp, 0, false), Tcp(5, 6, tcpflag::kSyn, 1)})));
  EXPECT_FALSE(atomic.is_fragment);
  EXPECT_TRUE(atomic.has_transport);
  EXPECT_TRUE(IsNewFlowPacket(atomic));
}

struct Sample {
  const char* name;
  Bytes packet;
  size_t headers;  // bytes up to the end of the transport header
};

std::vector<Sample> Samples() {
  return {
      {"v4-tcp", Ipv4(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn, 3, {1, 1, 1, 0}, Payload(9))),
       20 + 24},
      {"v4-opts-udp", Ipv4(ipproto::kUdp, Udp(1, 2, Payload(9)), WithOptions({1, 1, 1, 0})),
       24 + 8},
      {"v4-icmp", Ipv4(ipproto::kIcmp, Icmp(8, 0, 1, Payload(9))), 20 + 8},
      {"v6-tcp", Ipv6(ipproto::kTcp, Tcp(1, 2, tcpflag::kSyn, 3, {}, Payload(9))), 40 + 20},
      {"v6-chain-udp",
       Ipv6(0, Cat({Ext(43, 2), Ext(44), Frag(ipproto::kUdp, 0, false), Udp(1, 2, Payload(9))})),
       40 + 16 + 8 + 8 + 8},
      {"v6-icmp", Ipv6(ipproto::kIcmpV6, Icmp(128, 0, 1, Payload(9))), 40 + 8},
  };
}

TEST(ParsePacketTest, TruncationAtEveryOffsetIsAnErrorOrATruncatedParse) {
  for (const Sample& s : Samples()) {
    SCOPED_TRACE(s.name);
    const ParsedPacket full = MustParse(s.packet);
    for (size_t n = 0; n <= s.packet.size(); ++n) {
      SCOPED_TRACE(n);
      // A copy of exactly n bytes, so ASan would catch a read past the end.
      const Bytes prefix(s.packet.begin(), s.packet.begin() + static_cast<ptrdiff_t>(n));
      auto parsed = ParsePacket(prefix);
      if (n < s.headers) {
        ASSERT_FALSE(parsed.has_value());
        EXPECT_EQ(parsed.error().code, ErrorCode::kMalformed);
        EXPECT_FALSE(parsed.error().message.empty());
      } else {
        ASSERT_TRUE(parsed.has_value()) << parsed.error().message;
        EXPECT_EQ(parsed->tuple, full.tuple);
        EXPECT_EQ(parsed->truncated, n < s.packet.size());
        EXPECT_EQ(parsed->payload.size(), n - s.headers);
      }
    }
  }
}

TEST(ParsePacketTest, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  size_t ok = 0;
  for (int i = 0; i < 200000; ++i) {
    Bytes b(rng() % 120);
    for (auto& byte : b) byte = static_cast<uint8_t>(rng());
    if (!b.empty()) b[0] = static_cast<uint8_t>((rng() % 2 ? 0x40 : 0x60) | (b[0] & 0x0f));
    auto parsed = ParsePacket(b);
    if (parsed) {
      ++ok;
      EXPECT_GE(parsed->payload.data(), b.data());
      EXPECT_LE(parsed->payload.data() + parsed->payload.size(), b.data() + b.size());
    }
  }
  EXPECT_GT(ok, 0u);  // the generator does reach the success paths
}

TEST(FlowKeyHashTest, EqualKeysHashEqualAndDifferentKeysDiffer) {
  const FlowKeyHash hash(1, 2);
  FlowKey a = FlowKeyOf(MustParse(Ipv4(ipproto::kTcp, Tcp(40000, 443, tcpflag::kSyn, 1))));
  FlowKey retransmit = FlowKeyOf(MustParse(Ipv4(ipproto::kTcp, Tcp(40000, 443, tcpflag::kSyn, 1))));
  EXPECT_EQ(a, retransmit);
  EXPECT_EQ(hash(a), hash(retransmit));

  FlowKey other_port = a;
  other_port.tuple.src_port = 40001;
  EXPECT_NE(hash(a), hash(other_port));
  FlowKey ping1 = FlowKeyOf(MustParse(Ipv4(ipproto::kIcmp, Icmp(8, 0, 1))));
  FlowKey ping2 = FlowKeyOf(MustParse(Ipv4(ipproto::kIcmp, Icmp(8, 0, 2))));
  EXPECT_NE(ping1, ping2);
  EXPECT_NE(hash(ping1), hash(ping2));

  // The key matters: another key gives other values (so collisions cannot be precomputed).
  EXPECT_NE(FlowKeyHash(1, 2)(a), FlowKeyHash(3, 4)(a));
  // Default instances share the process key, so containers built at different times agree.
  EXPECT_EQ(FlowKeyHash()(a), FlowKeyHash()(a));
}

TEST(FlowKeyHashTest, WorksAsUnorderedSetHasher) {
  std::unordered_set<FlowKey, FlowKeyHash> keys;
  for (uint16_t port = 1; port <= 1000; ++port) {
    FlowKey k;
    k.tuple.src = IpAddress::V4(127, 0, 0, 1);
    k.tuple.dst = IpAddress::V4(127, 0, 0, 1);
    k.tuple.protocol = ipproto::kUdp;
    k.tuple.src_port = port;
    keys.insert(k);
    keys.insert(k);
  }
  EXPECT_EQ(keys.size(), 1000u);
}

}  // namespace
}  // namespace tollgate::flow
