#include "analysis/name_map.h"

#include <algorithm>
#include <optional>
#include <unordered_set>

namespace tollgate::analysis {

NameMap::NameMap(NameMapLimits limits) : limits_(limits) {
  TG_CHECK(limits_.max_entries > 0);
  TG_CHECK(limits_.max_names_per_address > 0);
  TG_CHECK(limits_.min_ttl <= limits_.max_ttl);
}

size_t NameMap::AddressHash::operator()(const IpAddress& ip) const {
  uint64_t h = 1469598103934665603ull ^ ip.family;  // FNV-1a
  for (uint8_t b : ip.bytes) h = (h ^ b) * 1099511628211ull;
  return static_cast<size_t>(h);
}

void NameMap::Observe(const DnsReply& reply, MonoTime now) {
  DropExpired(now);
  if (reply.rcode != 0 || reply.question.empty()) return;

  // Walk the CNAME chain from the question. chain_ttl[i] is the smallest TTL from the question to
  // chain[i]. A CNAME loop or fork stops the walk: each name is visited once, the first CNAME wins.
  std::vector<std::string> chain{reply.question};
  std::vector<uint32_t> chain_ttl{UINT32_MAX};
  std::unordered_set<std::string> seen{reply.question};
  while (chain.size() <= limits_.max_cname_chain) {
    const DnsRecord* next = nullptr;
    for (const DnsRecord& r : reply.answers) {
      if (r.type == DnsRecord::Type::kCname && r.name == chain.back()) {
        next = &r;
        break;
      }
    }
    if (next == nullptr || !seen.insert(next->target).second) break;
    chain_ttl.push_back(std::min(chain_ttl.back(), next->ttl));
    chain.push_back(next->target);
  }

  for (const DnsRecord& r : reply.answers) {
    if (r.type == DnsRecord::Type::kCname) continue;
    const auto owner = std::find(chain.begin(), chain.end(), r.name);
    if (owner == chain.end()) continue;
    const size_t last = static_cast<size_t>(owner - chain.begin());
    const Duration ttl = std::clamp<Duration>(
        std::chrono::seconds(std::min(chain_ttl[last], r.ttl)), limits_.min_ttl, limits_.max_ttl);
    // Bind the owner first and the question last so the question is the most recent name.
    for (size_t i = last + 1; i-- > 0;) Bind(r.address, chain[i], now + ttl);
  }
}

void NameMap::Bind(const IpAddress& address, const std::string& name, MonoTime expires) {
  Names& names = by_address_[address];
  auto it = names.find(name);
  if (it != names.end()) {
    expires = std::max(expires, it->second.expires);
    by_expiry_.erase({it->second.expires, it->second.seq});
    names.erase(it);
  } else if (names.size() >= limits_.max_names_per_address) {
    auto oldest = std::min_element(names.begin(), names.end(), [](const auto& a, const auto& b) {
      return a.second.seq < b.second.seq;
    });
    by_expiry_.erase({oldest->second.expires, oldest->second.seq});
    names.erase(oldest);
  }
  while (by_expiry_.size() >= limits_.max_entries) {
    auto victim = by_expiry_.begin();
    auto victim_names = by_address_.find(victim->second.first);
    TG_CHECK(victim_names != by_address_.end());
    victim_names->second.erase(victim->second.second);
    // Never erase `address`'s own map: `names` refers to it and is about to receive `name`.
    if (victim_names->second.empty() && !(victim_names->first == address)) {
      by_address_.erase(victim_names);
    }
    by_expiry_.erase(victim);
  }
  const uint64_t seq = next_seq_++;
  names.emplace(name, Binding{expires, seq});
  by_expiry_.emplace(ExpiryKey{expires, seq}, std::pair{address, name});
}

void NameMap::DropExpired(MonoTime now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first.first <= now) {
    auto first = by_expiry_.begin();
    auto names = by_address_.find(first->second.first);
    TG_CHECK(names != by_address_.end());
    names->second.erase(first->second.second);
    if (names->second.empty()) by_address_.erase(names);
    by_expiry_.erase(first);
  }
}

std::vector<std::string> NameMap::NamesFor(const IpAddress& address, MonoTime now,
                                           MonoTime* first_expiry) const {
  std::vector<std::string> out;
  auto names = by_address_.find(address);
  if (names == by_address_.end()) return out;
  std::vector<std::pair<uint64_t, const std::string*>> live;
  std::optional<MonoTime> first;
  for (const auto& [name, binding] : names->second) {
    if (binding.expires > now) {
      live.emplace_back(binding.seq, &name);
      if (!first || binding.expires < *first) first = binding.expires;
    }
  }
  if (first && first_expiry != nullptr) *first_expiry = *first;
  std::sort(live.begin(), live.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  out.reserve(live.size());
  for (const auto& entry : live) out.push_back(*entry.second);
  return out;
}

}  // namespace tollgate::analysis
