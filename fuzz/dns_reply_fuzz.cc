// Fuzzes the DNS reply parser and the IP -> names map it feeds: every byte string must be
// rejected with an error that names a place, or parsed into bounded, lowercase names that
// NameMap::Observe accepts (no crash, no over-read, no UB, no unbounded growth).
#include <cstddef>
#include <cstdint>
#include <span>

#include "analysis/dns.h"
#include "analysis/name_map.h"
#include "common/clock.h"

namespace {

bool WellFormedName(const std::string& name) {
  if (name.size() > 253) return false;
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tollgate::analysis;
  auto reply = ParseDnsReply(std::span(data, size));
  if (!reply) {
    if (reply.error().message.empty()) __builtin_trap();
    return 0;
  }
  if (reply->answers.size() > kDnsMaxAnswers || !WellFormedName(reply->question)) {
    __builtin_trap();
  }
  NameMapLimits limits;
  limits.max_entries = 16;
  limits.max_names_per_address = 4;
  NameMap map(limits);
  tollgate::FakeClock clock;
  map.Observe(*reply, clock.Now());
  map.Observe(*reply, clock.Now());
  if (map.size() > limits.max_entries) __builtin_trap();
  for (const DnsRecord& r : reply->answers) {
    if (!WellFormedName(r.name) || !WellFormedName(r.target)) __builtin_trap();
    if (r.type != DnsRecord::Type::kCname &&
        map.NamesFor(r.address, clock.Now()).size() > limits.max_names_per_address) {
      __builtin_trap();
    }
  }
  return 0;
}
