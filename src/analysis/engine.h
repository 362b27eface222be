// The analysis engine: tollgated's Analyzer. It keeps what the daemon learns about flows (the
// IP -> names map from DNS replies the filter saw) and decides each FlowQuestion against the rule
// table in force, gathering the other facts a rule needs only when a rule needs them: the name
// from the TLS ClientHello or HTTP Host of an inspected flow, the application protocol (an
// AppClassifier, nDPI in production) and the process behind the flow (a ProcessSource,
// sock_diag + /proc on Linux). The channel server calls Decide and ObserveDns; a reload calls
// Replace. Portable: the OS sits behind ProcessSource.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "analysis/analyzer.h"
#include "analysis/app_classifier.h"
#include "analysis/name_map.h"
#include "analysis/process.h"
#include "analysis/rule_table.h"
#include "common/clock.h"

namespace tollgate::analysis {

// One decision as the operator's tools see it: the flow log (SQLite) and live subscribers.
struct DecisionRecord {
  WallTime time;
  FlowQuestion question;  // payload cleared: the log keeps no flow content
  Verdict verdict;
  std::string rule;                      // deciding rule's name; "" for the default or a fallback
  std::vector<KnownName> names;          // names of the remote end known when deciding
  std::optional<ProcessLookup> process;  // when a rule needed it; else the observer may look up
};

// Called synchronously on the verdict path for every decision: must only enqueue, never block.
using DecisionObserver = std::function<void(const DecisionRecord&)>;

struct EngineOptions {
  NameMapLimits names;
  // The most payload bytes a verdict may ask the filter for (filter.inspect_max_bytes); 0 turns
  // inspection off, so rules that need a name nobody resolved fall to on_unknown at once.
  uint32_t inspect_max_bytes = 2048;
  // How long a filter may reuse a verdict that depended only on the flow's tuple and uid for
  // other new flows to the same destination (CacheScope::kDestination); 0 turns that off.
  std::chrono::milliseconds destination_cache_ttl{std::chrono::seconds(60)};
  // The wall clock `expires` is compared with; replaceable for tests and replays.
  std::function<WallTime()> wall_clock = [] { return std::chrono::system_clock::now(); };
};

// Monotonic counts for status and metrics. Read with relaxed loads; each is exact on its own.
struct EngineCounters {
  std::atomic<uint64_t> questions{0};
  std::atomic<uint64_t> inspect_verdicts{0};
  std::atomic<uint64_t> dns_replies{0};
  std::atomic<uint64_t> dns_malformed{0};  // replies the parser refused (counted and ignored)
  std::atomic<uint64_t> names_from_sni{0};
  std::atomic<uint64_t> names_from_http{0};
  std::atomic<uint64_t> payload_unreadable{0};  // payload with no name a reader could use
  std::atomic<uint64_t> classifications{0};
  std::atomic<uint64_t> classifier_errors{0};
  std::atomic<uint64_t> process_lookups{0};
  std::atomic<uint64_t> process_unknown{0};  // lookups that found no live process
  std::atomic<uint64_t> once_rules_used{0};
  std::atomic<uint64_t> decided_by_filters{0};  // flows decided from destination-scoped verdicts
};

class Engine final : public Analyzer {
 public:
  // `processes` and `classifier` may be null (no attribution / no classification: rules that
  // need them are undecided). Both, and `clock`, must outlive the engine.
  Engine(std::shared_ptr<const RuleTable> table, ProcessSource* processes,
         AppClassifier* classifier, const Clock& clock, EngineOptions options = {});

  Verdict Decide(const FlowQuestion& question) override;
  void ObserveDecided(const FlowQuestion& question, Action action) override;
  // The full decision, with the deciding rule.
  Decision DecideWithRule(const FlowQuestion& question);
  // What `question` would get now, without using up a `once` rule, counting, or telling the
  // observer: for `tollgate rules test` (the control API's TestFlow).
  Decision Explain(const FlowQuestion& question);
  // Receives every decision made by Decide/DecideWithRule from now on (one observer; the daemon
  // fans out). Set before the engine is shared with other threads.
  void SetObserver(DecisionObserver observer) { observer_ = std::move(observer); }
  void ObserveDns(const uint8_t* reply, size_t size) override;

  // Publishes `table` for every later decision. `once` rules used under the old table stay used
  // under the new one (by name), so a reload does not re-arm them.
  void Replace(std::shared_ptr<const RuleTable> table);
  std::shared_ptr<const RuleTable> Current() const;

  const EngineCounters& counters() const { return counters_; }
  size_t known_names() const;

 private:
  class Facts;
  void ScopeCache(Decision& decision, const Facts& facts) const;

  ProcessSource* processes_;
  AppClassifier* classifier_;
  const Clock& clock_;
  EngineOptions options_;
  EngineCounters counters_;
  DecisionObserver observer_;

  // A mutex around a shared_ptr copy rather than std::atomic<std::shared_ptr>: libstdc++ 12's
  // atomic load() releases its internal lock with relaxed order, a data race TSan reports. The
  // critical section is one reference-count increment; the decision runs outside it.
  mutable std::mutex table_mutex_;
  std::shared_ptr<const RuleTable> table_;  // never null
  std::set<std::string> used_once_;         // guarded by table_mutex_

  mutable std::mutex names_mutex_;
  NameMap names_;  // guarded by names_mutex_
};

}  // namespace tollgate::analysis
