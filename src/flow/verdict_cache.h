// The filter's cache of destination-scoped verdicts (CacheScope::kDestination): the daemon marks
// a verdict so when its decision used only the flow's direction, protocol, remote address,
// destination port and uid, and says for how long it may be reused. A new flow with the same five
// is then decided here, without a round trip to the daemon (the filter reports it afterwards, so
// the daemon still logs every flow). The daemon's Forget empties the cache after a rule change.
//
// A decision may also have used the names the daemon knows for the remote address (host and
// list rules; `until_dns`): the daemon learns names only from the DNS replies this filter passes
// on, so such a verdict holds until a DNS reply names that address again. NamedByDns records
// each address a reply names with the id of the last question asked before it; a verdict whose
// question is older is stale, whether it was kept before the reply or arrives after it (an answer
// in flight while the reply passed). The record of named addresses is bounded too; past the bound
// the oldest record goes and every until_dns verdict asked before it counts as stale.
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
  uint64_t renamed = 0;    // until_dns verdicts a DNS reply made stale (dropped, or never kept)
};

class VerdictCache {
 public:
  explicit VerdictCache(size_t max_entries = 16384, FlowKeyHash hash = FlowKeyHash(),
                        size_t max_named = 16384)
      : max_entries_(max_entries), max_named_(max_named), entries_(16, hash), named_(16, hash) {}

  // The verdict for a new flow like `question`, if one is cached and still valid. Only for
  // questions without payload (a first packet): anything later was asked for a reason.
  std::optional<Action> Find(const FlowQuestion& question, MonoTime now);
  // Keeps `action` for flows like `question` until now + ttl. Inspect is never kept. `until_dns`:
  // the decision used the remote address's names (see above); question.id orders it against
  // NamedByDns.
  void Insert(const FlowQuestion& question, Action action, Duration ttl, MonoTime now,
              bool until_dns = false);
  // A DNS reply being passed on names `address`; `last_question_id` is the id of the newest
  // question asked before it (0: none yet).
  void NamedByDns(const IpAddress& address, uint64_t last_question_id);
  // Removes what the selector matches (all, or a destination address/prefix, protocol, port).
  void Forget(const ForgetSelector& selector);

  size_t size() const { return entries_.size(); }
  // The record of named addresses (bounded by max_named) and its order (at most twice that).
  size_t named_size() const { return named_.size(); }
  size_t named_order_size() const { return named_order_.size(); }
  const VerdictCacheCounters& counters() const { return counters_; }

 private:
  struct Entry {
    Action action;
    MonoTime expires;
    uint64_t generation;   // matches the order_ record that may remove it
    uint64_t question_id;  // with until_dns: the question it answered
    bool until_dns;
  };
  static FlowKey KeyOf(const FlowQuestion& question);
  static FlowKey AddressKey(const IpAddress& address);
  static bool Matches(const FlowKey& key, const ForgetSelector& selector);
  // Whether a DNS reply named `remote` after question `question_id` was asked (or may have: the
  // record of it is gone).
  bool NamedSince(const IpAddress& remote, uint64_t question_id) const;

  size_t max_entries_;
  size_t max_named_;
  std::unordered_map<FlowKey, Entry, FlowKeyHash> entries_;
  std::deque<std::pair<uint64_t, FlowKey>> order_;  // (generation, key), oldest first
  uint64_t next_generation_ = 1;
  // Addresses DNS replies named (AddressKey) -> last_question_id of the newest such reply; the
  // deque is their order, oldest first, with records of superseded values skipped when met.
  std::unordered_map<FlowKey, uint64_t, FlowKeyHash> named_;
  std::deque<std::pair<uint64_t, FlowKey>> named_order_;
  uint64_t named_floor_ = 0;  // the largest last_question_id of a record dropped by the bound
  VerdictCacheCounters counters_;
};

}  // namespace tollgate::flow
