// Zero-copy parser of an IP packet as NFQUEUE hands it over (the buffer starts at the IPv4 or IPv6
// header, no link layer). tollgate-filter calls ParsePacket() on every queued packet to learn the
// flow's 5-tuple, the TCP flags and where the payload starts; the fuzz target calls it with
// anything at all. It never allocates for a packet that parses and never reads outside the span.
// The result points into the caller's buffer, so it is valid only as long as that buffer is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/error.h"
#include "common/flow.h"

namespace tollgate::flow {

namespace tcpflag {
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
inline constexpr uint8_t kUrg = 0x20;
inline constexpr uint8_t kEce = 0x40;
inline constexpr uint8_t kCwr = 0x80;
}  // namespace tcpflag

// A hostile packet could chain extension headers up to the MTU; Linux itself gives up far earlier
// in practice, and a real host never needs more than a handful.
inline constexpr int kMaxIpv6ExtensionHeaders = 8;

struct ParsedPacket {
  // Addresses and protocol always; ports for TCP/UDP; ICMP/ICMPv6 type in src_port and code in
  // dst_port (see common/flow.h). Ports stay 0 when there is no transport header to read.
  FlowTuple tuple;
  uint8_t tcp_flags = 0;  // tcpflag::k* bits; 0 for anything but TCP
  uint32_t tcp_seq = 0;   // lets the flow table tell a retransmitted SYN from a reused tuple
  uint16_t echo_id = 0;   // identifier of ICMP(v6) echo request/reply; conntrack keys on it
  // Transport payload (TCP data, UDP data, ICMP body after its 8-byte header; for protocols we do
  // not parse or non-first fragments, everything after the network headers). Cut at the end of
  // what was captured, so it may be shorter than the packet says (see `truncated`).
  std::span<const uint8_t> payload;
  bool is_fragment = false;         // part of a fragmented datagram (first or later fragment)
  bool has_transport = false;       // false for non-first fragments and protocols we do not parse
  bool truncated = false;           // capture shorter than the IP length (NFQUEUE copy_range)
  uint16_t fragment_offset = 0;     // in bytes
  uint16_t network_header_len = 0;  // IPv4 header with options / IPv6 header + extension headers
  uint32_t ip_length = 0;           // from the IP header, or the capture length when it says 0
};

// Parses IPv4/IPv6 with TCP, UDP, ICMP and ICMPv6. Errors (ErrorCode::kMalformed, or kTooLarge for
// an over-long IPv6 extension-header chain) say which header was bad and why. A non-first fragment
// or an unknown transport protocol is not an error: it comes back with has_transport == false.
Expected<ParsedPacket> ParsePacket(std::span<const uint8_t> packet);

// True when the packet opens a flow the filter must ask about: a TCP SYN without ACK, or any UDP,
// ICMP or ICMPv6 packet with a readable header (iptables queues those only in conntrack state NEW,
// so the kernel has already decided that they open a flow). Fragments without a transport header
// and other protocols are false. Note a TCP flow picked up mid-stream by conntrack (entry deleted
// by a Forget) reaches the queue without a SYN; the caller asks about it all the same.
bool IsNewFlowPacket(const ParsedPacket& packet);

// Identity of a flow in the filter's pending-flow table: the 5-tuple plus the ICMP echo identifier,
// which conntrack uses in place of ports (two pings to one host are two flows).
struct FlowKey {
  FlowTuple tuple;
  uint16_t echo_id = 0;
  bool operator==(const FlowKey&) const = default;
};

FlowKey FlowKeyOf(const ParsedPacket& packet);

// Keyed hash (SipHash-1-3) of a FlowKey for unordered containers. The tuple is chosen by whoever
// sends packets, so an unkeyed hash would let a remote peer aim every flow at one bucket; the
// default key is random per process. Tests pass a fixed key to get reproducible values.
class FlowKeyHash {
 public:
  // The process-wide random key, drawn with getrandom(2) on first use: construct one before a
  // seccomp sandbox that forbids getrandom is entered.
  FlowKeyHash();
  FlowKeyHash(uint64_t k0, uint64_t k1) : k0_(k0), k1_(k1) {}
  size_t operator()(const FlowKey& key) const noexcept;

 private:
  uint64_t k0_;
  uint64_t k1_;
};

}  // namespace tollgate::flow
