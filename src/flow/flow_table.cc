#include "flow/flow_table.h"

#include <algorithm>

#include "common/error.h"

namespace tollgate::flow {

const char* ReleaseName(Release r) {
  switch (r) {
    case Release::kAllow:
      return "allow";
    case Release::kPass:
      return "pass";
    case Release::kDeny:
      return "deny";
    case Release::kDrop:
      return "drop";
    case Release::kReject:
      return "reject";
    case Release::kInspect:
      return "inspect";
  }
  return "?";
}

FlowTable::FlowTable(FlowTableOptions options, PacketSink& sink) : options_(options), sink_(sink) {
  flows_.reserve(std::min<size_t>(options_.max_pending, 4096));
}

Release FlowTable::FallbackRelease() const {
  // A fallback is never stamped on the flow: the next question may find the daemon back.
  return options_.fallback == FallbackPolicy::kFailOpen ? Release::kPass : Release::kDrop;
}

void FlowTable::Send(const PacketRef& ref, Release how) {
  ++counters_.released[static_cast<size_t>(how)];
  sink_.ReleasePacket(ref, how);
}

void FlowTable::Hold(Flow& flow, const PacketRef& ref) {
  if (flow.held.size() >= options_.max_held_per_flow) {
    // A flow that keeps sending while we wait: drop the extra copies; TCP and UDP senders retry,
    // and the packets we hold already carry the flow's first bytes.
    ++counters_.held_overflow;
    Send(ref, Release::kDrop);
    return;
  }
  flow.held.push_back(ref);
}

void FlowTable::ReleaseHeld(Flow& flow, Release how) {
  for (const PacketRef& ref : flow.held) Send(ref, how);
  flow.held.clear();
}

void FlowTable::Remember(const FlowKey& key, Release how, MonoTime now) {
  if (options_.max_remembered == 0) return;
  while (remembered_.size() >= options_.max_remembered && !remembered_order_.empty()) {
    auto [until, old] = remembered_order_.front();
    remembered_order_.pop_front();
    auto it = remembered_.find(old);
    if (it != remembered_.end() && it->second.until == until) remembered_.erase(it);
  }
  MonoTime until = now + options_.remembered_verdict_ttl;
  remembered_[key] = Remembered{how, until};
  remembered_order_.emplace_back(until, key);
}

std::optional<FlowQuestion> FlowTable::OnPacket(const ParsedPacket& packet, const PacketRef& ref,
                                                const PacketContext& context, MonoTime now) {
  ++counters_.packets;
  FlowKey key = FlowKeyOf(packet);

  if (auto it = flows_.find(key); it != flows_.end()) {
    Flow& flow = it->second;
    if (flow.state == State::kAsking) {
      ++counters_.joined;
      Hold(flow, ref);
      return std::nullopt;
    }
    // Collecting the client's first bytes for an inspection.
    if (packet.payload.empty()) {
      Send(ref, Release::kPass);  // a bare ACK carries nothing to inspect
      return std::nullopt;
    }
    // Keep the whole packet (up to inspect_max_bytes), not just the n asked for: the packet is
    // held, so bytes cut off here could never be read again, and a reader that learns from the
    // first bytes how many it needs (a TLS record length) would otherwise wait for bytes the
    // client already sent. `want_bytes` only says when to ask.
    std::vector<uint8_t>& bytes = flow.question.payload;
    size_t room =
        options_.inspect_max_bytes > bytes.size() ? options_.inspect_max_bytes - bytes.size() : 0;
    size_t take = std::min(room, packet.payload.size());
    bytes.insert(bytes.end(), packet.payload.begin(), packet.payload.begin() + take);
    if (flow.held.empty()) {
      flow.collect_until = now + options_.inspect_wait;
      collecting_[key] = flow.collect_until;
    }
    Hold(flow, ref);
    if (bytes.size() >= flow.want_bytes) return AskAgainWithPayload(flow);
    return std::nullopt;
  }

  if (auto it = remembered_.find(key); it != remembered_.end()) {
    if (it->second.until > now) {
      ++counters_.remembered_hits;
      Send(ref, it->second.how);
      return std::nullopt;
    }
    remembered_.erase(it);
  }

  if (flows_.size() >= options_.max_pending) {
    ++counters_.overflow;
    Send(ref, FallbackRelease());
    return std::nullopt;
  }

  ++counters_.new_flows;
  ++counters_.questions;
  Flow& flow = flows_[key];
  flow.question_id = next_question_id_++;
  flow.question.id = flow.question_id;
  flow.question.tuple = packet.tuple;
  flow.question.direction = context.direction;
  flow.question.iface = context.iface;
  flow.question.uid = context.uid;
  flow.question.gid = context.gid;
  flow.held.push_back(ref);
  by_question_.emplace(flow.question_id, key);
  return flow.question;
}

FlowQuestion FlowTable::AskAgainWithPayload(Flow& flow) {
  FlowKey key = by_question_.at(flow.question_id);
  by_question_.erase(flow.question_id);
  collecting_.erase(key);
  flow.state = State::kAsking;
  flow.asked_with_payload = true;
  flow.question_id = next_question_id_++;
  flow.question.id = flow.question_id;
  by_question_.emplace(flow.question_id, key);
  ++counters_.questions;
  ++counters_.inspections;
  return flow.question;
}

void FlowTable::OnDecision(uint64_t question_id, Action action, uint32_t inspect_bytes,
                           CacheScope cache, MonoTime now) {
  auto q = by_question_.find(question_id);
  if (q == by_question_.end()) {
    ++counters_.unknown_decisions;
    return;
  }
  FlowKey key = q->second;
  auto it = flows_.find(key);
  TG_CHECK(it != flows_.end() && it->second.question_id == question_id);
  Flow& flow = it->second;
  // kFlow and kDestination both hold for this flow's life; only kNone (fallbacks) stamps nothing.
  const bool stamp = cache != CacheScope::kNone;

  if (action == Action::kInspect) {
    uint32_t want = std::clamp<uint32_t>(inspect_bytes, 1, options_.inspect_max_bytes);
    if (flow.asked_with_payload && want <= flow.question.payload.size()) {
      // Asked for no more than it already had: the daemon cannot decide from the bytes. Do not
      // loop; the fallback decides, as for a flow that never sends enough.
      ReleaseHeld(flow, FallbackRelease());
      by_question_.erase(q);
      collecting_.erase(key);
      flows_.erase(it);
      return;
    }
    if (!flow.asked_with_payload) ReleaseHeld(flow, Release::kInspect);  // the handshake goes
    by_question_.erase(q);
    flow.state = State::kCollecting;
    flow.want_bytes = want;
    if (!flow.held.empty()) {
      flow.collect_until = now + options_.inspect_wait;
      collecting_[key] = flow.collect_until;
    }
    // Stays in by_question_ under its old id no longer: AskAgainWithPayload registers the next.
    flow.question_id = next_question_id_++;
    by_question_.emplace(flow.question_id, key);
    return;
  }

  Release how = Release::kPass;
  switch (action) {
    case Action::kAllow:
      how = stamp ? Release::kAllow : Release::kPass;
      break;
    case Action::kDeny:
      how = stamp ? Release::kDeny : Release::kDrop;
      break;
    case Action::kReject:
      how = Release::kReject;
      break;
    case Action::kInspect:
      break;  // handled above
  }
  ReleaseHeld(flow, how);
  if (stamp && (how == Release::kDeny || how == Release::kReject)) Remember(key, how, now);
  by_question_.erase(q);
  collecting_.erase(key);
  flows_.erase(it);
}

std::vector<FlowQuestion> FlowTable::OnTimer(MonoTime now) {
  std::vector<FlowQuestion> questions;
  std::vector<FlowKey> due;
  for (const auto& [key, until] : collecting_) {
    if (until <= now) due.push_back(key);
  }
  for (const FlowKey& key : due) {
    auto it = flows_.find(key);
    TG_CHECK(it != flows_.end());
    questions.push_back(AskAgainWithPayload(it->second));
  }
  while (!remembered_order_.empty() && remembered_order_.front().first <= now) {
    auto [until, key] = remembered_order_.front();
    remembered_order_.pop_front();
    auto it = remembered_.find(key);
    if (it != remembered_.end() && it->second.until == until) remembered_.erase(it);
  }
  return questions;
}

std::optional<MonoTime> FlowTable::NextTimer() const {
  std::optional<MonoTime> next;
  if (!remembered_order_.empty()) next = remembered_order_.front().first;
  for (const auto& [key, until] : collecting_) {
    if (!next || until < *next) next = until;
  }
  return next;
}

void FlowTable::ReleaseAll() {
  Release how = FallbackRelease();
  for (auto& [key, flow] : flows_) ReleaseHeld(flow, how);
  flows_.clear();
  by_question_.clear();
  collecting_.clear();
}

}  // namespace tollgate::flow
