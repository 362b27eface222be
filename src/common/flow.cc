#include "common/flow.h"

#include <arpa/inet.h>

namespace tollgate {

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  text.copy(buf, text.size());
  buf[text.size()] = '\0';
  IpAddress ip;
  if (inet_pton(AF_INET, buf, ip.bytes.data()) == 1) {
    ip.family = 4;
    return ip;
  }
  if (inet_pton(AF_INET6, buf, ip.bytes.data()) == 1) {
    ip.family = 6;
    return ip;
  }
  return std::nullopt;
}

std::string IpAddress::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  if (family == 4) return inet_ntop(AF_INET, bytes.data(), buf, sizeof(buf));
  if (family == 6) return inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  return "?";
}

std::string ProtocolName(uint8_t protocol) {
  switch (protocol) {
    case ipproto::kTcp:
      return "tcp";
    case ipproto::kUdp:
      return "udp";
    case ipproto::kIcmp:
      return "icmp";
    case ipproto::kIcmpV6:
      return "icmpv6";
    default:
      return std::to_string(protocol);
  }
}

const char* ActionName(Action action) {
  switch (action) {
    case Action::kAllow:
      return "allow";
    case Action::kDeny:
      return "deny";
    case Action::kReject:
      return "reject";
    case Action::kInspect:
      return "inspect";
  }
  return "?";
}

const char* FallbackPolicyName(FallbackPolicy policy) {
  return policy == FallbackPolicy::kFailOpen ? "fail_open" : "fail_closed";
}

std::optional<FallbackPolicy> ParseFallbackPolicy(std::string_view text) {
  if (text == "fail_open") return FallbackPolicy::kFailOpen;
  if (text == "fail_closed") return FallbackPolicy::kFailClosed;
  return std::nullopt;
}

}  // namespace tollgate
