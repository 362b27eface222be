// The filter's cache of destination-scoped verdicts (CacheScope::kDestination): the daemon marks
// a verdict so when its decision used only the flow's direction, protocol, remote address,
// destination port and uid, and says for how long it may be reused. A new flow with the same five
// is then decided here, without a round trip to the daemon (the filter reports it afterwards, so
// the daemon still logs every flow). The daemon's Forget empties the cache after a rule change.
//
// Bounded: at most `max_entries`; when full, the oldest entry goes. Expired entries are dropped
// when met (lookup) and from the front of the insertion order (insert). Keyed hash (the flow
// table's SipHash), since the remote address and port are chosen by whoever sends packets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>

#include "common/clock.h"
#include "common/flow.h"
#include "flow/packet.h"

namespace tollgate::flow {

struct VerdictCacheCounters {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t inserted = 0;
  uint64_t expired = 0;
  uint64_t evicted = 0;    // pushed out by the bound
  uint64_t forgotten = 0;  // removed by a Forget
};

class VerdictCache {
 public:
  explicit VerdictCache(size_t max_entries = 16384, FlowKeyHash hash = FlowKeyHash())
      : max_entries_(max_entries), entries_(16, hash) {}

  // The verdict for a new flow like `question`, if one is cached and still valid. Only for
  // questions without payload (a first packet): anything later was asked for a reason.
  std::optional<Action> Find(const FlowQuestion& question, MonoTime now);
  // Keeps `action` for flows like `question` until now + ttl. Inspect is never kept.
  void Insert(const FlowQuestion& question, Action action, Duration ttl, MonoTime now);
  // Removes what the selector matches (all, or a destination address/prefix, protocol, port).
  void Forget(const ForgetSelector& selector);

  size_t size() const { return entries_.size(); }
  const VerdictCacheCounters& counters() const { return counters_; }

 private:
  struct Entry {
    Action action;
    MonoTime expires;
    uint64_t generation;  // matches the order_ record that may remove it
  };
  static FlowKey KeyOf(const FlowQuestion& question);
  static bool Matches(const FlowKey& key, const ForgetSelector& selector);

  size_t max_entries_;
  std::unordered_map<FlowKey, Entry, FlowKeyHash> entries_;
  std::deque<std::pair<uint64_t, FlowKey>> order_;  // (generation, key), oldest first
  uint64_t next_generation_ = 1;
  VerdictCacheCounters counters_;
};

}  // namespace tollgate::flow
