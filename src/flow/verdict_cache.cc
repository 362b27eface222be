#include "flow/verdict_cache.h"

#include <algorithm>

namespace tollgate::flow {

// The cache's key, in a FlowKey so the flow table's keyed hash serves: the remote address in dst,
// the destination port and the protocol where they belong; the local address and the source
// port are left out (no rule looks at them), and src carries what else the decision may have
// used: the uid (bytes 0-3) and the direction (byte 4), with family 0 so that it is never
// mistaken for an address.
FlowKey VerdictCache::KeyOf(const FlowQuestion& q) {
  FlowKey key;
  key.tuple.dst = q.direction == Direction::kOutbound ? q.tuple.dst : q.tuple.src;
  key.tuple.dst_port = q.tuple.dst_port;
  key.tuple.protocol = q.tuple.protocol;
  key.tuple.src.family = 0;
  key.tuple.src.bytes[0] = static_cast<uint8_t>(q.uid >> 24);
  key.tuple.src.bytes[1] = static_cast<uint8_t>(q.uid >> 16);
  key.tuple.src.bytes[2] = static_cast<uint8_t>(q.uid >> 8);
  key.tuple.src.bytes[3] = static_cast<uint8_t>(q.uid);
  key.tuple.src.bytes[4] = static_cast<uint8_t>(q.direction);
  return key;
}

FlowKey VerdictCache::AddressKey(const IpAddress& address) {
  FlowKey key;
  key.tuple.dst = address;
  return key;
}

bool VerdictCache::NamedSince(const IpAddress& remote, uint64_t question_id) const {
  if (question_id <= named_floor_) return true;
  auto it = named_.find(AddressKey(remote));
  return it != named_.end() && it->second >= question_id;
}

void VerdictCache::NamedByDns(const IpAddress& address, uint64_t last_question_id) {
  if (max_entries_ == 0) return;
  FlowKey key = AddressKey(address);
  auto [it, added] = named_.try_emplace(key, last_question_id);
  if (!added) {
    // The same address again with no newer question asked: nothing changes, nothing to record
    // (a flood of replies naming one address must not grow the record).
    if (it->second >= last_question_id) return;
    it->second = last_question_id;
  }
  named_order_.emplace_back(last_question_id, key);
  while (named_.size() > max_named_ && !named_order_.empty()) {
    auto [id, oldest] = named_order_.front();
    named_order_.pop_front();
    auto live = named_.find(oldest);
    if (live == named_.end() || live->second != id) continue;  // superseded by a later reply
    named_.erase(live);
    named_floor_ = std::max(named_floor_, id);
  }
  // Superseded records stay until they reach the front; keep that slack bounded.
  if (named_order_.size() > 2 * max_named_ + 16) {
    std::deque<std::pair<uint64_t, FlowKey>> live;
    for (const auto& record : named_order_) {
      auto found = named_.find(record.second);
      if (found != named_.end() && found->second == record.first) live.push_back(record);
    }
    named_order_.swap(live);
  }
}

std::optional<Action> VerdictCache::Find(const FlowQuestion& question, MonoTime now) {
  if (!question.payload.empty()) return std::nullopt;
  auto it = entries_.find(KeyOf(question));
  if (it == entries_.end()) {
    ++counters_.misses;
    return std::nullopt;
  }
  if (it->second.expires <= now) {
    ++counters_.expired;
    ++counters_.misses;
    entries_.erase(it);  // its order_ record is skipped when reached (generation mismatch)
    return std::nullopt;
  }
  if (it->second.until_dns && NamedSince(it->first.tuple.dst, it->second.question_id)) {
    ++counters_.renamed;
    ++counters_.misses;
    entries_.erase(it);
    return std::nullopt;
  }
  ++counters_.hits;
  return it->second.action;
}

void VerdictCache::Insert(const FlowQuestion& question, Action action, Duration ttl, MonoTime now,
                          bool until_dns) {
  if (action == Action::kInspect || ttl <= Duration::zero() || max_entries_ == 0) return;
  FlowKey key = KeyOf(question);
  if (until_dns && NamedSince(key.tuple.dst, question.id)) {
    // A DNS reply named the address while the question was out: the daemon may know more now.
    ++counters_.renamed;
    return;
  }
  // The front of the order is the oldest: drop what expired, and one more if we are full (a new
  // verdict for a key we keep replaces it and needs no room).
  while (!order_.empty()) {
    const auto& [generation, oldest] = order_.front();
    auto it = entries_.find(oldest);
    const bool live = it != entries_.end() && it->second.generation == generation;
    const bool room = entries_.size() < max_entries_ || entries_.contains(key);
    if (live && it->second.expires > now && room) break;
    if (live) {
      ++(it->second.expires > now ? counters_.evicted : counters_.expired);
      entries_.erase(it);
    }
    order_.pop_front();
  }
  const uint64_t generation = next_generation_++;
  entries_.insert_or_assign(key, Entry{action, now + ttl, generation, question.id, until_dns});
  order_.emplace_back(generation, key);
  ++counters_.inserted;
  // Records of entries replaced or erased since stay in order_ until they reach the front; keep
  // that slack bounded too.
  if (order_.size() > 2 * max_entries_ + 16) {
    std::deque<std::pair<uint64_t, FlowKey>> live;
    for (const auto& record : order_) {
      auto it = entries_.find(record.second);
      if (it != entries_.end() && it->second.generation == record.first) live.push_back(record);
    }
    order_.swap(live);
  }
}

bool VerdictCache::Matches(const FlowKey& key, const ForgetSelector& s) {
  if (s.all) return true;
  if (s.protocol != 0 && key.tuple.protocol != s.protocol) return false;
  if (s.dst_port != 0 && key.tuple.dst_port != s.dst_port) return false;
  if (s.dst.family == 0) return true;
  const IpAddress& a = key.tuple.dst;
  if (a.family != s.dst.family) return false;
  const unsigned bits = s.dst_prefix;
  const unsigned whole = bits / 8;
  for (unsigned i = 0; i < whole && i < a.size(); ++i) {
    if (a.bytes[i] != s.dst.bytes[i]) return false;
  }
  if (const unsigned rest = bits % 8; rest != 0 && whole < a.size()) {
    const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
    if ((a.bytes[whole] & mask) != (s.dst.bytes[whole] & mask)) return false;
  }
  return true;
}

void VerdictCache::Forget(const ForgetSelector& selector) {
  if (selector.all) {
    counters_.forgotten += entries_.size();
    entries_.clear();
    order_.clear();
    // The named addresses stay: an answer in flight may still arrive for an older question.
    return;
  }
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (Matches(it->first, selector)) {
      ++counters_.forgotten;
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tollgate::flow
