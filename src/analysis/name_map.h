// The IP -> names map: which names a process resolved to reach an address, learnt from DNS
// replies the filter saw. The analyzer feeds it every parsed reply (Observe) and asks it for the
// names of a flow's remote address (NamesFor), so host rules can match a connection by the name
// the process resolved. Portable and single-threaded: the caller serialises access.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "analysis/dns.h"
#include "common/clock.h"
#include "common/flow.h"

namespace tollgate::analysis {

struct NameMapLimits {
  // Mappings live for the record's TTL clamped to [min_ttl, max_ttl].
  // The floor: TTL 0 and 1 s answers are common (CDNs, load balancers), and the connection
  // arrives after the reply, so an unclamped entry could expire before the flow is asked about.
  // The ceiling: TTLs up to 68 years are legal on the wire; a day bounds how long a renumbered
  // address keeps an old name.
  Duration min_ttl = std::chrono::seconds(5);
  Duration max_ttl = std::chrono::hours(24);
  // Total (address, name) pairs. When full, the pair that expires soonest goes first: it is
  // the one we would lose anyway, and expired pairs sort before all live ones.
  size_t max_entries = 100'000;
  // Names kept per address; a shared CDN address can front thousands of names and NamesFor is
  // on the verdict path. When full the least recently seen name of that address goes.
  size_t max_names_per_address = 32;
  // CNAME hops followed from the question (RFC 1034 chains are short; loops end here too).
  size_t max_cname_chain = 8;
};

class NameMap {
 public:
  explicit NameMap(NameMapLimits limits = {});

  // Records, for each A/AAAA answer reachable from the question through at most max_cname_chain
  // CNAMEs, the address -> every name on the chain from the question to the record's owner.
  // Answers off that chain are ignored (a reply should not vouch for names nobody asked about),
  // as are replies whose RCODE is not NOERROR. The TTL of a mapping is the smallest TTL on its
  // chain; re-observing a pair never shortens its life. Also drops expired pairs.
  void Observe(const DnsReply& reply, MonoTime now);

  // Unexpired names of `address`, most recently observed first; within one reply the question
  // comes first, then the chain in order. `first_expiry`, if given, gets the time the first of
  // them expires (unchanged when there are none): until then, only a new reply changes them (or
  // eviction at max_entries, which takes the pairs that expire soonest first).
  std::vector<std::string> NamesFor(const IpAddress& address, MonoTime now,
                                    MonoTime* first_expiry = nullptr) const;

  size_t size() const { return by_expiry_.size(); }

 private:
  struct Binding {
    MonoTime expires;
    uint64_t seq = 0;  // higher = seen more recently; unique, so also a tie-breaker
  };
  struct AddressHash {
    size_t operator()(const IpAddress& ip) const;
  };
  using ExpiryKey = std::pair<MonoTime, uint64_t>;
  using Names = std::unordered_map<std::string, Binding>;

  void Bind(const IpAddress& address, const std::string& name, MonoTime expires);
  void DropExpired(MonoTime now);

  NameMapLimits limits_;
  uint64_t next_seq_ = 1;
  std::unordered_map<IpAddress, Names, AddressHash> by_address_;
  std::map<ExpiryKey, std::pair<IpAddress, std::string>> by_expiry_;
};

}  // namespace tollgate::analysis
