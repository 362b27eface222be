#include "flow/packet.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace tollgate::flow {
namespace {

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}

// Only the error path formats (and allocates); a packet that parses costs no allocation.
Unexpected Malformed(ErrorCode code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
Unexpected Malformed(ErrorCode code, const char* fmt, ...) {
  char buf[160];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  return Unexpected(code, buf);
}

constexpr uint8_t kIpv6HopByHop = 0;
constexpr uint8_t kIpv6Routing = 43;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint8_t kIpv6Ah = 51;
constexpr uint8_t kIpv6DestOpts = 60;
constexpr uint8_t kIpv6Mobility = 135;
constexpr uint8_t kIpv6Hip = 139;
constexpr uint8_t kIpv6Shim6 = 140;

const char* ExtensionName(uint8_t type) {
  switch (type) {
    case kIpv6HopByHop:
      return "hop-by-hop";
    case kIpv6Routing:
      return "routing";
    case kIpv6Fragment:
      return "fragment";
    case kIpv6Ah:
      return "authentication";
    case kIpv6DestOpts:
      return "destination-options";
    case kIpv6Mobility:
      return "mobility";
    case kIpv6Hip:
      return "hip";
    case kIpv6Shim6:
      return "shim6";
    default:
      return "unknown";
  }
}

// `l4` is what was captured of the transport segment; `l4_length` is its size according to the IP
// header (larger when NFQUEUE's copy_range cut the capture). Length fields inside the transport
// header are checked against l4_length, never against the capture.
Status ParseTransport(std::span<const uint8_t> l4, uint32_t l4_length, bool fragment,
                      ParsedPacket& out) {
  const uint8_t* p = l4.data();
  const size_t have = l4.size();
  const uint8_t proto = out.tuple.protocol;
  const bool v4 = out.tuple.src.family == 4;

  if (proto == ipproto::kTcp) {
    if (have < 20)
      return Malformed(ErrorCode::kMalformed, "tcp: header needs 20 bytes, packet has %zu", have);
    const size_t data_offset = static_cast<size_t>(p[12] >> 4) * 4;
    if (data_offset < 20) {
      return Malformed(ErrorCode::kMalformed,
                       "tcp: data offset %zu bytes below the 20-byte minimum", data_offset);
    }
    if (data_offset > have) {
      return Malformed(ErrorCode::kMalformed,
                       "tcp: options truncated: data offset %zu bytes, packet has %zu", data_offset,
                       have);
    }
    out.tuple.src_port = Be16(p);
    out.tuple.dst_port = Be16(p + 2);
    out.tcp_seq = Be32(p + 4);
    out.tcp_flags = p[13];
    out.payload = l4.subspan(data_offset);
    out.has_transport = true;
    return {};
  }

  if (proto == ipproto::kUdp) {
    if (have < 8)
      return Malformed(ErrorCode::kMalformed, "udp: header needs 8 bytes, packet has %zu", have);
    const uint16_t udp_length = Be16(p + 4);
    size_t end = have;
    // 0 is legal for IPv6 jumbograms and what UDP GSO super-packets may carry; trust the IP length.
    if (udp_length != 0) {
      if (udp_length < 8) {
        return Malformed(ErrorCode::kMalformed, "udp: length field %u below the 8-byte header",
                         udp_length);
      }
      // A first fragment carries the length of the whole datagram, not of this fragment.
      if (!fragment && udp_length > l4_length) {
        return Malformed(ErrorCode::kMalformed,
                         "udp: length field %u exceeds the %u bytes the IP header leaves for it",
                         udp_length, l4_length);
      }
      end = std::min<size_t>(end, udp_length);
    }
    out.tuple.src_port = Be16(p);
    out.tuple.dst_port = Be16(p + 2);
    out.payload = l4.subspan(8, end - 8);
    out.has_transport = true;
    return {};
  }

  if ((proto == ipproto::kIcmp && v4) || (proto == ipproto::kIcmpV6 && !v4)) {
    const char* name = v4 ? "icmp" : "icmpv6";
    if (have < 8)
      return Malformed(ErrorCode::kMalformed, "%s: header needs 8 bytes, packet has %zu", name,
                       have);
    const uint8_t type = p[0];
    out.tuple.src_port = type;
    out.tuple.dst_port = p[1];
    // Echo request/reply: v4 8/0, v6 128/129. The identifier plays the role of a port.
    const bool echo = v4 ? (type == 8 || type == 0) : (type == 128 || type == 129);
    if (echo) out.echo_id = Be16(p + 4);
    out.payload = l4.subspan(8);
    out.has_transport = true;
    return {};
  }

  // Other protocols (SCTP, GRE, ESP, ...) are not ours to read; the caller sees the raw bytes.
  out.payload = l4;
  return {};
}

Expected<ParsedPacket> ParseIpv4(std::span<const uint8_t> packet) {
  const uint8_t* p = packet.data();
  const size_t size = packet.size();
  if (size < 20)
    return Malformed(ErrorCode::kMalformed, "ipv4: header needs 20 bytes, packet has %zu", size);
  const size_t header_len = static_cast<size_t>(p[0] & 0x0f) * 4;
  if (header_len < 20) {
    return Malformed(ErrorCode::kMalformed,
                     "ipv4: header length %zu bytes below the 20-byte minimum", header_len);
  }
  if (header_len > size) {
    return Malformed(ErrorCode::kMalformed,
                     "ipv4: header with options needs %zu bytes, packet has %zu", header_len, size);
  }
  ParsedPacket out;
  const uint16_t total_length = Be16(p + 2);
  // 0 means "larger than 64 KiB": IPv4 BIG TCP GSO packets, which NFQUEUE passes on with the
  // GSO flag. The capture is then all we know.
  out.ip_length = total_length == 0 ? static_cast<uint32_t>(size) : total_length;
  if (out.ip_length < header_len) {
    return Malformed(ErrorCode::kMalformed, "ipv4: total length %u below header length %zu",
                     out.ip_length, header_len);
  }
  out.truncated = size < out.ip_length;
  const size_t end = std::min<size_t>(size, out.ip_length);

  const uint16_t frag = Be16(p + 6);
  const bool more_fragments = (frag & 0x2000) != 0;
  out.fragment_offset = static_cast<uint16_t>((frag & 0x1fff) * 8);
  out.is_fragment = more_fragments || out.fragment_offset != 0;
  out.network_header_len = static_cast<uint16_t>(header_len);

  out.tuple.protocol = p[9];
  out.tuple.src.family = 4;
  out.tuple.dst.family = 4;
  std::memcpy(out.tuple.src.bytes.data(), p + 12, 4);
  std::memcpy(out.tuple.dst.bytes.data(), p + 16, 4);

  std::span<const uint8_t> l4 = packet.subspan(header_len, end - header_len);
  if (out.fragment_offset != 0) {
    // A later fragment starts in the middle of the transport payload: there is no header to read.
    out.payload = l4;
    return out;
  }
  auto status =
      ParseTransport(l4, out.ip_length - static_cast<uint32_t>(header_len), out.is_fragment, out);
  if (!status) return Unexpected(status.error());
  return out;
}

Expected<ParsedPacket> ParseIpv6(std::span<const uint8_t> packet) {
  const uint8_t* p = packet.data();
  const size_t size = packet.size();
  if (size < 40)
    return Malformed(ErrorCode::kMalformed, "ipv6: header needs 40 bytes, packet has %zu", size);
  ParsedPacket out;
  const uint16_t payload_length = Be16(p + 4);
  // 0: jumbogram, or an IPv6 BIG TCP GSO packet (the kernel drops the jumbo option internally).
  out.ip_length = payload_length == 0 ? static_cast<uint32_t>(size) : 40u + payload_length;
  out.truncated = size < out.ip_length;
  const size_t end = std::min<size_t>(size, out.ip_length);

  out.tuple.src.family = 6;
  out.tuple.dst.family = 6;
  std::memcpy(out.tuple.src.bytes.data(), p + 8, 16);
  std::memcpy(out.tuple.dst.bytes.data(), p + 24, 16);

  // Walk the extension-header chain. Order rules of RFC 8200 (hop-by-hop first) are not enforced,
  // just as the kernel's own ipv6_skip_exthdr() does not: we only need to find the transport.
  uint8_t next = p[6];
  size_t offset = 40;
  int count = 0;
  bool later_fragment = false;
  for (bool walking = true; walking;) {
    size_t len = 0;
    switch (next) {
      case kIpv6HopByHop:
      case kIpv6Routing:
      case kIpv6DestOpts:
      case kIpv6Mobility:
      case kIpv6Hip:
      case kIpv6Shim6:
      case kIpv6Ah:
      case kIpv6Fragment:
        break;
      default:
        walking = false;
        continue;
    }
    if (++count > kMaxIpv6ExtensionHeaders) {
      return Malformed(ErrorCode::kTooLarge, "ipv6: more than %d extension headers",
                       kMaxIpv6ExtensionHeaders);
    }
    if (end - offset < 8) {
      return Malformed(ErrorCode::kMalformed,
                       "ipv6: %s extension header at offset %zu truncated: needs 8 bytes, has %zu",
                       ExtensionName(next), offset, end - offset);
    }
    const uint8_t* h = p + offset;
    if (next == kIpv6Fragment) {
      len = 8;
      const uint16_t frag = Be16(h + 2);
      const uint16_t frag_offset = frag & 0xfff8;
      const bool more = (frag & 1) != 0;
      // An atomic fragment (offset 0, no more fragments, RFC 6946) is a whole packet.
      if (frag_offset != 0 || more) {
        out.is_fragment = true;
        out.fragment_offset = frag_offset;
      }
      later_fragment = frag_offset != 0;
    } else if (next == kIpv6Ah) {
      len = (static_cast<size_t>(h[1]) + 2) * 4;  // AH counts 4-byte words, minus 2
    } else {
      len = (static_cast<size_t>(h[1]) + 1) * 8;  // the others count 8-byte units, minus 1
    }
    if (len > end - offset) {
      return Malformed(ErrorCode::kMalformed,
                       "ipv6: %s extension header at offset %zu is %zu bytes, packet has %zu left",
                       ExtensionName(next), offset, len, end - offset);
    }
    next = h[0];
    offset += len;
    // Headers after the fragment header of a later fragment are not in this packet.
    if (later_fragment) walking = false;
  }
  out.tuple.protocol = next;
  out.network_header_len = static_cast<uint16_t>(offset);

  std::span<const uint8_t> l4 = packet.subspan(offset, end - offset);
  if (later_fragment) {
    out.payload = l4;
    return out;
  }
  const uint32_t l4_length =
      out.ip_length > offset ? out.ip_length - static_cast<uint32_t>(offset) : 0;
  auto status = ParseTransport(l4, l4_length, out.is_fragment, out);
  if (!status) return Unexpected(status.error());
  return out;
}

// SipHash-1-3 (Aumasson, Bernstein): keyed, fast on short inputs, and what Rust and Python use for
// exactly this job (hash tables fed by untrusted keys).
uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

struct SipState {
  uint64_t v0, v1, v2, v3;
  void Round() {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  }
};

uint64_t Load64Le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t SipHash13(uint64_t k0, uint64_t k1, const uint8_t* data, size_t len) {
  SipState s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
             k1 ^ 0x7465646279746573ULL};
  const size_t full = len & ~size_t{7};
  for (size_t i = 0; i < full; i += 8) {
    const uint64_t m = Load64Le(data + i);
    s.v3 ^= m;
    s.Round();
    s.v0 ^= m;
  }
  uint64_t last = static_cast<uint64_t>(len & 0xff) << 56;
  for (size_t i = 0; i < (len & 7); ++i) last |= static_cast<uint64_t>(data[full + i]) << (8 * i);
  s.v3 ^= last;
  s.Round();
  s.v0 ^= last;
  s.v2 ^= 0xff;
  s.Round();
  s.Round();
  s.Round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

struct HashKey {
  uint64_t k0;
  uint64_t k1;
};

const HashKey& ProcessHashKey() {
  static const HashKey key = [] {
    uint64_t words[2];
    // Blocks only until the kernel's pool is initialised, which is long past at filter start.
    TG_CHECK(getrandom(words, sizeof(words), 0) == static_cast<ssize_t>(sizeof(words)));
    return HashKey{words[0], words[1]};
  }();
  return key;
}

}  // namespace

Expected<ParsedPacket> ParsePacket(std::span<const uint8_t> packet) {
  if (packet.empty()) return Unexpected(ErrorCode::kMalformed, "ip: empty packet");
  switch (packet[0] >> 4) {
    case 4:
      return ParseIpv4(packet);
    case 6:
      return ParseIpv6(packet);
    default:
      return Malformed(ErrorCode::kMalformed, "ip: version %u is neither 4 nor 6", packet[0] >> 4);
  }
}

bool IsNewFlowPacket(const ParsedPacket& packet) {
  if (!packet.has_transport) return false;
  switch (packet.tuple.protocol) {
    case ipproto::kTcp:
      return (packet.tcp_flags & (tcpflag::kSyn | tcpflag::kAck)) == tcpflag::kSyn;
    case ipproto::kUdp:
    case ipproto::kIcmp:
    case ipproto::kIcmpV6:
      return true;
    default:
      return false;
  }
}

FlowKey FlowKeyOf(const ParsedPacket& packet) { return FlowKey{packet.tuple, packet.echo_id}; }

FlowKeyHash::FlowKeyHash() : k0_(ProcessHashKey().k0), k1_(ProcessHashKey().k1) {}

size_t FlowKeyHash::operator()(const FlowKey& key) const noexcept {
  // Packed explicitly: hashing the struct's bytes would pick up padding.
  uint8_t buf[40];
  const FlowTuple& t = key.tuple;
  buf[0] = t.src.family;
  buf[1] = t.protocol;
  std::memcpy(buf + 2, t.src.bytes.data(), 16);
  std::memcpy(buf + 18, t.dst.bytes.data(), 16);
  buf[34] = static_cast<uint8_t>(t.src_port >> 8);
  buf[35] = static_cast<uint8_t>(t.src_port);
  buf[36] = static_cast<uint8_t>(t.dst_port >> 8);
  buf[37] = static_cast<uint8_t>(t.dst_port);
  buf[38] = static_cast<uint8_t>(key.echo_id >> 8);
  buf[39] = static_cast<uint8_t>(key.echo_id);
  return static_cast<size_t>(SipHash13(k0_, k1_, buf, sizeof(buf)));
}

}  // namespace tollgate::flow
