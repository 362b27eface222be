// The filter-side ledger of questions sent to (or waiting for) the daemon. Each question is settled
// exactly once: by the daemon's verdict, or by the fallback when its deadline passes or the daemon
// is away. A verdict for a question that is no longer here (settled by fallback, or never asked) is
// "late" and must be ignored by the caller: this class is what makes "never answered twice" hold.
// Pure logic, no clock of its own: callers pass the time, tests use a FakeClock.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>

#include "common/clock.h"
#include "common/flow.h"

namespace tollgate::ipc {

class PendingQuestions {
 public:
  struct Entry {
    MonoTime deadline;
    uint64_t sent_in_session = 0;  // 0 = not yet sent on any connection
    FlowQuestion question;
  };

  // Adds a question; TG_CHECKs that the id is new (ids are ours, a duplicate is our bug).
  void Add(FlowQuestion question, MonoTime deadline);

  // Settles a question: returns it if it was pending, nullopt if unknown (late or duplicate).
  std::optional<FlowQuestion> Settle(uint64_t id);

  // Settles every question whose deadline is <= now, oldest first.
  template <typename F>
  void ExpireUntil(MonoTime now, F&& on_expired) {
    while (!order_.empty() && order_.front().first <= now) {
      uint64_t id = order_.front().second;
      order_.pop_front();
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;  // settled earlier by a verdict
      FlowQuestion q = std::move(it->second.question);
      entries_.erase(it);
      on_expired(q);
    }
  }

  // Settles everything (daemon unreachable), oldest first.
  template <typename F>
  void SettleAll(F&& on_settled) {
    while (!order_.empty()) {
      uint64_t id = order_.front().second;
      order_.pop_front();
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;
      FlowQuestion q = std::move(it->second.question);
      entries_.erase(it);
      on_settled(q);
    }
  }

  // Calls f(entry) for pending questions not yet sent in `session`, in ask order, and marks them
  // sent. Used after a (re)connect: questions survive a lost connection until their deadline.
  template <typename F>
  void ForEachUnsent(uint64_t session, F&& f) {
    for (const auto& [deadline, id] : order_) {
      auto it = entries_.find(id);
      if (it == entries_.end() || it->second.sent_in_session == session) continue;
      it->second.sent_in_session = session;
      f(it->second.question);
    }
  }
  void MarkSent(uint64_t id, uint64_t session);

  std::optional<MonoTime> NextDeadline();
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

 private:
  void DropSettledFront();

  std::unordered_map<uint64_t, Entry> entries_;
  // Ask order. Deadlines are ask time plus a fixed budget, so this is also deadline order; entries
  // settled by a verdict are skipped lazily.
  std::deque<std::pair<MonoTime, uint64_t>> order_;
};

// Capped exponential backoff with jitter for reconnects: the first retry is immediate (a restarted
// daemon behind socket activation is usually there at once), then initial, 2x, 4x ... up to max.
class Backoff {
 public:
  struct Options {
    Duration initial{std::chrono::milliseconds(50)};
    Duration max{std::chrono::seconds(5)};
    double jitter = 0.2;  // each delay is scaled by a factor in [1 - jitter, 1 + jitter]
  };
  // `random01` returns a value in [0, 1); injected so tests are deterministic.
  Backoff(Options options, double (*random01)());

  Duration Next();
  void Reset() { attempt_ = 0; }
  uint32_t attempt() const { return attempt_; }

 private:
  Options options_;
  double (*random01_)();
  uint32_t attempt_ = 0;
};

}  // namespace tollgate::ipc
