// The operator's rules and the first Analyzer built on them. tollgated loads rules.d/*.toml with
// LoadRuleFiles at start-up and on reload and hands the table to RuleTableAnalyzer::Replace; the
// channel server asks RuleTableAnalyzer::Decide about each FlowQuestion. docs/rules.md is the
// operator's version of what follows; keep the two in step.
//
// Semantics:
//  - A rule matches a flow when every condition it states holds. A condition it leaves out does
//    not constrain; a list within one condition means "any of these".
//  - Rules are tried in this order: higher `priority` first; at equal priority, deny and reject
//    before allow (an author who wrote a deny wants it to hold, whatever file an allow sits in);
//    then load order (files in lexical order, rules in file order). The first match decides.
//  - When no rule matches, the table's default action (daemon.default_action) applies, with the
//    reason "default: no rule matched".
//  - `port` is the destination port and only TCP and UDP flows have one, so a rule with a port
//    never matches ICMP. `ip`/`cidr` match the remote address: the destination of an outbound
//    flow, the source of an inbound one (the other host in both cases; the local address would
//    almost never be what an author means).
//  - Every verdict names the rule and what it required: `deny: rule "no-telnet" (tcp port 23)`.
//  - A rule file with any mistake fails the whole load with `file:line:col: what is wrong`, so the
//    caller keeps the table in force; Replace() swaps whole tables atomically, so no question is
//    ever decided against half a reload.
//
// Growth (issue 4): host, user/uid, exe, unit, app_protocol and list conditions, expiry and `once`
// become further members of Rule, further keys in the loader, further checks in Rule::Matches
// (which will then take the flow's attribution and names next to the question). The loader
// already rejects those keys by name, so a rule written for the later engine is refused, never
// half-applied.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/analyzer.h"
#include "common/error.h"
#include "common/flow.h"

namespace tollgate::analysis {

// A rule file is written by root; anything bigger than this is a wrong path, not a rule set.
inline constexpr size_t kMaxRuleFileBytes = 16 << 20;

inline constexpr char kDefaultReason[] = "default: no rule matched";

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
  bool Contains(uint16_t port) const { return port >= first && port <= last; }
  bool operator==(const PortRange&) const = default;
};

// An address and a prefix length: "10.0.0.0/8", "2001:db8::/32"; a plain address is a host
// network (/32 or /128).
struct IpNetwork {
  IpAddress address;
  uint8_t prefix_len = 0;

  // Accepts "addr/len" and "addr". Host bits may be set here; the rule loader refuses them (a
  // typo such as "192.168.1.0/16" should be shown, not silently widened) using Masked().
  static std::optional<IpNetwork> Parse(std::string_view text);
  // The same network with the bits beyond the prefix cleared.
  IpNetwork Masked() const;
  // Same family and the first prefix_len bits equal. Does not allocate.
  bool Contains(const IpAddress& ip) const;
  // "10.0.0.0/8"; a host network prints as the bare address.
  std::string ToString() const;
  bool operator==(const IpNetwork&) const = default;
};

// One [[rule]] as written. Conditions left empty do not constrain the flow.
struct Rule {
  std::string name;  // unique across all loaded files
  Action action = Action::kDeny;
  int32_t priority = 0;
  std::string origin;  // "file:line:col" of its name, so messages can point back at it

  std::optional<Direction> direction;
  std::vector<uint8_t> protocols;  // IP protocol numbers (ipproto::k*)
  std::vector<PortRange> ports;    // destination port; TCP and UDP only
  std::vector<IpNetwork> remote;   // `ip` and `cidr`: the other host's address

  // Every stated condition holds. Does not allocate: it runs for every question.
  bool Matches(const FlowQuestion& question) const;
};

// The rules in evaluation order plus the default action. Immutable once built, so any number of
// threads may decide against it while a reload builds the next one.
class RuleTable {
 public:
  // Sorts into evaluation order (see the top of this file) and precomputes each rule's verdict
  // reason. Fails on a duplicate name, an `inspect` action or an `inspect` default.
  static Expected<std::shared_ptr<const RuleTable>> Build(std::vector<Rule> rules,
                                                          Action default_action);
  // No rules: everything gets `default_action`. For a daemon that has no rules directory yet.
  static std::shared_ptr<const RuleTable> Empty(Action default_action);

  // The deciding rule, or nullptr when the default applies. Does not allocate.
  const Rule* Match(const FlowQuestion& question) const;
  // Verdict for `question` (same id) with the deciding rule's precomputed reason.
  Verdict Decide(const FlowQuestion& question) const;

  const std::vector<Rule>& rules() const { return rules_; }  // in evaluation order
  Action default_action() const { return default_action_; }
  // `deny: rule "no-telnet" (tcp port 23)` for rules()[index].
  const std::string& reason(size_t index) const { return reasons_[index]; }

 private:
  RuleTable(std::vector<Rule> rules, Action default_action);

  std::vector<Rule> rules_;
  std::vector<std::string> reasons_;  // parallel to rules_
  Action default_action_;
};

// The rules of one file, in file order. `source_name` is what messages call the text (its path).
// Checks everything that one file can get wrong, including duplicate names within it; names
// across files are checked by RuleTable::Build. Errors: kMalformed (not TOML) or kInvalidArgument.
Expected<std::vector<Rule>> ParseRuleFile(std::string_view text, const std::string& source_name);

// Every `*.toml` regular file (symlinks followed, dot-files skipped) directly in `dir`, in lexical
// order of file name, built into one table. Any error in any file fails the whole load, naming
// `file:line:col`, so the caller keeps the rules in force. A missing directory is kNotFound; the
// caller decides whether that means "no rules" (the default path on a fresh install) or a mistake.
Expected<std::shared_ptr<const RuleTable>> LoadRuleFiles(const std::string& dir,
                                                         Action default_action);

// The daemon's Analyzer for now: decides from a RuleTable that a reload can swap at any time.
class RuleTableAnalyzer final : public Analyzer {
 public:
  explicit RuleTableAnalyzer(std::shared_ptr<const RuleTable> table);

  // Safe from any thread, concurrently with Replace(). The table is pinned for the call, so a
  // question sees exactly one whole table, old or new.
  Verdict Decide(const FlowQuestion& question) override;

  // Publishes `table` for every later Decide(); calls already running finish on the old one,
  // which is freed when the last of them lets go.
  void Replace(std::shared_ptr<const RuleTable> table);

  // The table in force, e.g. for `tollgate rules` listing.
  std::shared_ptr<const RuleTable> Current() const;

 private:
  // A mutex around a shared_ptr copy rather than std::atomic<std::shared_ptr>: libstdc++ 12's
  // atomic load() releases its internal lock with relaxed order, a data race that TSan reports and
  // a weakly ordered CPU can turn into a pointer paired with the wrong reference count. The
  // critical section is one reference-count increment; the decision runs outside it.
  mutable std::mutex mutex_;
  std::shared_ptr<const RuleTable> table_;  // guarded by mutex_; never null
};

}  // namespace tollgate::analysis
