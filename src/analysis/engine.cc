#include "analysis/engine.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "analysis/dns.h"
#include "analysis/first_bytes.h"

namespace tollgate::analysis {

// The facts of one question, each computed on first use and kept for the rest of the decision.
class Engine::Facts final : public FlowFacts {
 public:
  Facts(Engine& engine, const FlowQuestion& question)
      : engine_(engine), question_(question), wall_now_(engine.options_.wall_clock()) {}

  const FlowQuestion& question() const override { return question_; }
  WallTime wall_now() const override { return wall_now_; }

  // Whether the decision so far used a fact beyond the question's tuple, uid and the names the
  // name map holds for the remote address: the application protocol, the process or the payload
  // (and so any name read from it). Such a decision holds for this flow only.
  bool used_flow_facts() const {
    return app_ready_ || process_ready_ || !question_.payload.empty();
  }
  // Whether it looked at the remote address's names (all from DNS when there is no payload).
  bool used_names() const { return names_ready_; }
  // When the first of those names expires; nullopt when there were none.
  std::optional<MonoTime> names_expire() const { return names_expire_; }

  std::span<const KnownName> names() override {
    if (!names_ready_) {
      names_ready_ = true;
      LearnNames();
    }
    return names_;
  }

  bool inspectable() const override {
    const uint32_t max = engine_.options_.inspect_max_bytes;
    if (max == 0 || question_.direction != Direction::kOutbound ||
        question_.tuple.protocol != ipproto::kTcp) {
      return false;
    }
    // Not inspected yet, or a reader said how many more bytes it needs (and they may come).
    return question_.payload.empty() ||
           (more_bytes_ > question_.payload.size() && more_bytes_ <= max);
  }

  uint32_t inspect_bytes() const override {
    return question_.payload.empty() ? 1 : static_cast<uint32_t>(more_bytes_);
  }

  const AppClassification* app() override {
    if (app_ready_) return app_ ? &*app_ : nullptr;
    app_ready_ = true;
    if (question_.payload.empty() || engine_.classifier_ == nullptr) return nullptr;
    engine_.counters_.classifications.fetch_add(1, std::memory_order_relaxed);
    auto result = engine_.classifier_->Classify(question_.tuple, question_.payload);
    if (!result) {
      engine_.counters_.classifier_errors.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    app_ = std::move(*result);
    return &*app_;
  }

  // The process lookup if a rule asked for it; nullopt otherwise (never looks up).
  std::optional<ProcessLookup> known_process() const {
    if (!process_ready_) return std::nullopt;
    return process_;
  }

  const ProcessLookup& process() override {
    if (process_ready_) return process_;
    process_ready_ = true;
    if (engine_.processes_ == nullptr) {
      // Assigned field by field: GCC 12 at -O3 warns (falsely) about the temporary of an
      // aggregate assignment here.
      process_.state = Attribution::kUnavailable;
      process_.detail = "no process source";
      return process_;
    }
    engine_.counters_.process_lookups.fetch_add(1, std::memory_order_relaxed);
    process_ = engine_.processes_->Find(question_);
    if (process_.state != Attribution::kFound) {
      engine_.counters_.process_unknown.fetch_add(1, std::memory_order_relaxed);
    }
    return process_;
  }

 private:
  // Names the process resolved for the remote address win: they are what the application asked
  // for. Without any, the name the client's first bytes carry (SNI, Host).
  void LearnNames() {
    const IpAddress& remote =
        question_.direction == Direction::kOutbound ? question_.tuple.dst : question_.tuple.src;
    std::vector<std::string> resolved;
    MonoTime first_expiry{};
    {
      std::lock_guard lock(engine_.names_mutex_);
      resolved = engine_.names_.NamesFor(remote, engine_.clock_.Now(), &first_expiry);
    }
    if (!resolved.empty()) names_expire_ = first_expiry;
    names_.reserve(resolved.size());
    for (std::string& name : resolved) names_.push_back({std::move(name), NameSource::kDns});
    if (!names_.empty() || question_.payload.empty()) return;
    ReadPayloadName();
  }

  void ReadPayloadName() {
    std::span<const uint8_t> bytes = question_.payload;
    size_t needed = 0;
    switch (Classify(bytes)) {
      case FirstBytesKind::kTls: {
        auto hello = ReadTlsClientHello(bytes, &needed);
        if (hello && !hello->server_name.empty()) {
          engine_.counters_.names_from_sni.fetch_add(1, std::memory_order_relaxed);
          names_.push_back({std::move(hello->server_name), NameSource::kSni});
          return;
        }
        if (!hello && hello.error().code == ErrorCode::kUnavailable) more_bytes_ = needed;
        break;
      }
      case FirstBytesKind::kHttp: {
        auto host = ReadHttpHost(bytes, &needed);
        // An address literal is not a name; a host rule must not match "Host: 10.0.0.1".
        if (host && !IpAddress::Parse(*host)) {
          engine_.counters_.names_from_http.fetch_add(1, std::memory_order_relaxed);
          names_.push_back({std::move(*host), NameSource::kHttpHost});
          return;
        }
        if (!host && host.error().code == ErrorCode::kUnavailable) more_bytes_ = needed;
        break;
      }
      case FirstBytesKind::kUnknown:
        break;
    }
    if (!inspectable())
      engine_.counters_.payload_unreadable.fetch_add(1, std::memory_order_relaxed);
  }

  Engine& engine_;
  const FlowQuestion& question_;
  WallTime wall_now_;
  bool names_ready_ = false;
  std::vector<KnownName> names_;
  std::optional<MonoTime> names_expire_;
  size_t more_bytes_ = 0;  // a reader's lower bound of the bytes it needs; 0 when none asked
  bool app_ready_ = false;
  std::optional<AppClassification> app_;
  bool process_ready_ = false;
  ProcessLookup process_;
};

Engine::Engine(std::shared_ptr<const RuleTable> table, ProcessSource* processes,
               AppClassifier* classifier, const Clock& clock, EngineOptions options)
    : processes_(processes),
      classifier_(classifier),
      clock_(clock),
      options_(options),
      table_(std::move(table)),
      names_(options.names) {
  TG_CHECK(table_ != nullptr);
}

Decision Engine::Explain(const FlowQuestion& question) {
  std::shared_ptr<const RuleTable> table = Current();
  Facts facts(*this, question);
  return table->Decide(facts, /*dry_run=*/true);
}

Decision Engine::DecideWithRule(const FlowQuestion& question) {
  counters_.questions.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const RuleTable> table = Current();
  Facts facts(*this, question);
  Decision decision = table->Decide(facts);
  ScopeCache(decision, facts);
  if (observer_) {
    DecisionRecord record;
    record.time = options_.wall_clock();
    record.question = question;
    record.question.payload.clear();
    record.verdict = decision.verdict;
    if (decision.rule != nullptr) record.rule = decision.rule->name;
    std::span<const KnownName> names = facts.names();
    record.names.assign(names.begin(), names.end());
    record.process = facts.known_process();
    observer_(record);
  }
  if (decision.verdict.action == Action::kInspect) {
    counters_.inspect_verdicts.fetch_add(1, std::memory_order_relaxed);
  } else if (decision.rule != nullptr && decision.rule->once) {
    counters_.once_rules_used.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(table_mutex_);
    used_once_.insert(decision.rule->name);
  }
  return decision;
}

// A verdict that used only the question's tuple and uid holds for every new flow with the same
// direction, protocol, remote address, destination port and uid, until the rules change (the
// daemon then tells the filters to forget) or the deciding rule expires; the filter may reuse it
// for options_.destination_cache_ttl at most. One that also looked at the names the name map
// holds for the remote address holds as long as those do: until the first of them expires, or a
// DNS reply names the address again (the filter sees that reply before anyone can use it, and
// drops the verdict: cache_until_dns). Never for inspect, a `once` rule, or a decision that
// looked at the application, the process or the payload.
void Engine::ScopeCache(Decision& decision, const Facts& facts) const {
  if (options_.destination_cache_ttl.count() <= 0 || facts.used_flow_facts() ||
      decision.verdict.action == Action::kInspect || decision.verdict.cache != CacheScope::kFlow ||
      (decision.rule != nullptr && decision.rule->once)) {
    return;
  }
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  auto ttl = duration_cast<milliseconds>(options_.destination_cache_ttl);
  if (decision.rule != nullptr && decision.rule->expires) {
    ttl = std::min(ttl, duration_cast<milliseconds>(*decision.rule->expires - facts.wall_now()));
  }
  if (facts.used_names()) {
    if (std::optional<MonoTime> expire = facts.names_expire()) {
      ttl = std::min(ttl, duration_cast<milliseconds>(*expire - clock_.Now()));
    }
    decision.verdict.cache_until_dns = true;
  }
  if (ttl.count() <= 0) {
    decision.verdict.cache_until_dns = false;
    return;
  }
  decision.verdict.cache = CacheScope::kDestination;
  decision.verdict.cache_ttl_ms = static_cast<uint32_t>(ttl.count());
}

Verdict Engine::Decide(const FlowQuestion& question) { return DecideWithRule(question).verdict; }

void Engine::ObserveDecided(const FlowQuestion& question, Action action) {
  counters_.decided_by_filters.fetch_add(1, std::memory_order_relaxed);
  if (!observer_) return;
  // The filter reused a verdict that depended only on the tuple, the uid and perhaps the names
  // the name map holds: explaining the flow again names the rule (it needs no process lookup or
  // payload; the name map may have changed since, and then the branch below says so).
  Decision explained = Explain(question);
  DecisionRecord record;
  record.time = options_.wall_clock();
  record.question = question;
  record.question.payload.clear();
  record.verdict = explained.verdict;
  record.verdict.id = question.id;
  if (explained.verdict.action == action) {
    if (explained.rule != nullptr) record.rule = explained.rule->name;
    record.verdict.reason += " (reused by the filter)";
  } else {
    // The rules changed after the filter took the verdict, before it heard so: log what it did.
    record.verdict.action = action;
    record.verdict.reason = std::string(ActionName(action)) + ": a verdict the filter reused";
  }
  observer_(record);
}

void Engine::ObserveDns(const uint8_t* reply, size_t size) {
  counters_.dns_replies.fetch_add(1, std::memory_order_relaxed);
  auto parsed = ParseDnsReply(std::span<const uint8_t>(reply, size));
  if (!parsed) {
    counters_.dns_malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::lock_guard lock(names_mutex_);
  names_.Observe(*parsed, clock_.Now());
}

void Engine::Replace(std::shared_ptr<const RuleTable> table) {
  TG_CHECK(table != nullptr);
  {
    std::lock_guard lock(table_mutex_);
    for (const std::string& name : used_once_) table->MarkUsed(name);
    table_.swap(table);
  }
  // `table` now holds the old one; if this was its last user it is freed here, outside the lock.
}

std::shared_ptr<const RuleTable> Engine::Current() const {
  std::lock_guard lock(table_mutex_);
  return table_;
}

size_t Engine::known_names() const {
  std::lock_guard lock(names_mutex_);
  return names_.size();
}

}  // namespace tollgate::analysis
