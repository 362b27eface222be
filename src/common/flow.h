// The portable vocabulary of a flow, shared by the filter, the wire codec and the analysis engine:
// addresses, 5-tuples, the question the filter asks and the verdict it gets back. No OS headers.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate {

struct IpAddress {
  uint8_t family = 0;               // 4 or 6; 0 = unset
  std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4

  static IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddress ip;
    ip.family = 4;
    ip.bytes = {a, b, c, d};
    return ip;
  }
  // Parses dotted IPv4 or RFC 4291 IPv6 text; nullopt on anything else.
  static std::optional<IpAddress> Parse(std::string_view text);
  std::string ToString() const;
  size_t size() const { return family == 4 ? 4 : 16; }
  bool operator==(const IpAddress&) const = default;
};

namespace ipproto {
inline constexpr uint8_t kIcmp = 1;
inline constexpr uint8_t kTcp = 6;
inline constexpr uint8_t kUdp = 17;
inline constexpr uint8_t kIcmpV6 = 58;
}  // namespace ipproto

// "tcp", "udp", "icmp", "icmpv6", or the number.
std::string ProtocolName(uint8_t protocol);

struct FlowTuple {
  IpAddress src;
  IpAddress dst;
  uint16_t src_port = 0;  // ICMP: type
  uint16_t dst_port = 0;  // ICMP: code
  uint8_t protocol = 0;
  bool operator==(const FlowTuple&) const = default;
};

enum class Direction : uint8_t { kOutbound = 0, kInbound = 1 };

inline constexpr uint32_t kUnknownId = 0xffffffffu;

struct FlowQuestion {
  uint64_t id = 0;
  FlowTuple tuple;
  Direction direction = Direction::kOutbound;
  uint32_t iface = 0;
  uint32_t uid = kUnknownId;
  uint32_t gid = kUnknownId;
  std::vector<uint8_t> payload;  // first payload bytes, after an inspect verdict
};

enum class Action : uint8_t { kAllow = 0, kDeny = 1, kReject = 2, kInspect = 3 };
const char* ActionName(Action action);

// kFlow: this flow (the conntrack mark); kNone: nothing; kDestination: this flow, and for
// Verdict::cache_ttl_ms every new flow with the same direction, protocol, remote address,
// destination port and uid (the decision used no other fact).
enum class CacheScope : uint8_t { kFlow = 0, kNone = 1, kDestination = 2 };

enum class FallbackPolicy : uint8_t { kFailOpen = 0, kFailClosed = 1 };
const char* FallbackPolicyName(FallbackPolicy policy);
std::optional<FallbackPolicy> ParseFallbackPolicy(std::string_view text);
// What a question gets when the daemon cannot answer in time.
inline Action FallbackAction(FallbackPolicy p) {
  return p == FallbackPolicy::kFailOpen ? Action::kAllow : Action::kDeny;
}

// Which kept verdicts a filter must forget (the daemon's Forget): all, or those for a remote
// address or prefix, a protocol, a destination port.
struct ForgetSelector {
  bool all = false;
  IpAddress dst;  // family 0 = any
  uint8_t dst_prefix = 0;
  uint8_t protocol = 0;   // 0 = any
  uint16_t dst_port = 0;  // 0 = any
};

struct Verdict {
  uint64_t id = 0;
  Action action = Action::kAllow;
  uint32_t inspect_bytes = 0;
  std::string reason;
  CacheScope cache = CacheScope::kFlow;
  uint32_t cache_ttl_ms = 0;  // with kDestination
  // With kDestination: the decision used the remote address's names too, so it holds only until
  // a DNS reply names that address (proto/tollgate.fbs).
  bool cache_until_dns = false;
};

}  // namespace tollgate
