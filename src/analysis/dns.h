// A strict parser for DNS reply messages (RFC 1035), the input of the IP -> names map (NameMap).
// The daemon calls it for every reply the filter saw; the bytes come from the network and may be
// hostile, so every bound is explicit, nothing is read outside the span, and anything unexpected
// is an Error (kMalformed or kTooLarge) naming the section and byte offset. Callers count and
// skip errors. Portable: no OS calls. For DNS over TCP the caller strips the 2-byte length prefix.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/flow.h"

namespace tollgate::analysis {

// Bounds a reply must respect; real replies stay far below them.
inline constexpr size_t kDnsMaxMessageBytes = 65535;  // the TCP length prefix cannot say more
inline constexpr size_t kDnsMaxAnswers = 256;
inline constexpr size_t kDnsMaxPointerJumps = 32;    // per name; real compressors need 1 or 2
inline constexpr size_t kDnsMaxNameWireBytes = 255;  // RFC 1035 3.1, length octets included

struct DnsRecord {
  enum class Type : uint8_t { kA, kAAAA, kCname };

  std::string name;  // owner, lowercase, dotted, no trailing dot; "" is the root
  Type type = Type::kA;
  IpAddress address;   // kA, kAAAA
  std::string target;  // kCname, same form as name
  uint32_t ttl = 0;    // seconds; RFC 2181 8: a TTL with the top bit set is read as 0
};

struct DnsReply {
  uint16_t id = 0;
  uint8_t rcode = 0;               // 0 NOERROR, 3 NXDOMAIN, ...
  std::string question;            // first question's name; "" when QDCOUNT is 0
  std::vector<DnsRecord> answers;  // A, AAAA and CNAME of class IN, in message order
};

// Accepts a message with QR = 1 and opcode QUERY, QDCOUNT <= 1 and ANCOUNT <= kDnsMaxAnswers.
// Other record types and classes in the answer section are skipped by RDLENGTH; the authority and
// additional sections are not read, nor are trailing bytes. Names: labels of printable ASCII
// without '.', folded to lowercase; compression pointers must point before the start of the label
// run that holds them (so no loops), at most kDnsMaxPointerJumps per name.
Expected<DnsReply> ParseDnsReply(std::span<const uint8_t> message);

}  // namespace tollgate::analysis
