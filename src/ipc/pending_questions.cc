#include "ipc/pending_questions.h"

#include <algorithm>

#include "common/error.h"

namespace tollgate::ipc {

void PendingQuestions::Add(FlowQuestion question, MonoTime deadline) {
  uint64_t id = question.id;
  TG_CHECK(order_.empty() || order_.back().first <= deadline);
  auto [it, inserted] = entries_.try_emplace(id, Entry{deadline, 0, std::move(question)});
  TG_CHECK(inserted);
  order_.emplace_back(deadline, id);
}

std::optional<FlowQuestion> PendingQuestions::Settle(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  FlowQuestion q = std::move(it->second.question);
  entries_.erase(it);
  DropSettledFront();
  return q;
}

void PendingQuestions::MarkSent(uint64_t id, uint64_t session) {
  auto it = entries_.find(id);
  if (it != entries_.end()) it->second.sent_in_session = session;
}

void PendingQuestions::DropSettledFront() {
  // Keeps the ask-order queue from growing with entries already settled by verdicts.
  while (!order_.empty() && !entries_.contains(order_.front().second)) order_.pop_front();
}

std::optional<MonoTime> PendingQuestions::NextDeadline() {
  DropSettledFront();
  if (order_.empty()) return std::nullopt;
  return order_.front().first;
}

Backoff::Backoff(Options options, double (*random01)()) : options_(options), random01_(random01) {}

Duration Backoff::Next() {
  uint32_t n = attempt_++;
  if (n == 0) return Duration{0};
  // initial * 2^(n-1), computed without overflow by stopping at the cap.
  Duration d = options_.initial;
  for (uint32_t i = 1; i < n && d < options_.max; ++i) d *= 2;
  d = std::min(d, options_.max);
  double factor = 1.0 + options_.jitter * (2.0 * random01_() - 1.0);
  auto scaled = Duration{static_cast<int64_t>(static_cast<double>(d.count()) * factor)};
  return std::max(scaled, Duration{0});
}

}  // namespace tollgate::ipc
