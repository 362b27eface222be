// The operator's rules. tollgated loads rules.d/*.toml with LoadRuleFiles at start-up and on
// reload and hands the table to the Engine (engine.h), which decides each FlowQuestion with
// RuleTable::Decide and the facts it has learnt. docs/rules.md is the
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
// Facts beyond the 5-tuple (names, process, application protocol) are asked of a FlowFacts
// object only when a rule being tried needs them, so a rule set that never mentions `exe` never
// pays for a process lookup. A condition whose fact is not known makes the rule "undecided":
//  - when an inspect verdict could still teach the fact (a name or app protocol, the flow is
//    outbound TCP and not inspected yet), the table answers inspect and decides on the next ask;
//  - otherwise the rule's `on_unknown` action decides, or, without one, the rule does not match.
// docs/rules.md states the same for operators.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "analysis/analyzer.h"
#include "analysis/app_classifier.h"
#include "analysis/blocklist.h"
#include "analysis/process.h"
#include "common/error.h"
#include "common/flow.h"

namespace re2 {
class RE2;
}  // namespace re2

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

using WallTime = std::chrono::system_clock::time_point;

// How the engine learnt a name of the flow's remote end.
enum class NameSource : uint8_t { kDns, kSni, kHttpHost };
const char* NameSourceName(NameSource source);  // "DNS", "SNI", "Host"

struct KnownName {
  std::string name;  // lowercase, no trailing dot
  NameSource source = NameSource::kDns;
};

// A `host` pattern: "example.com" (that name only), "*.example.com" (any name below it, not
// example.com itself), or "/regex/" (RE2, the whole name must match, case-insensitive).
struct HostPattern {
  enum class Kind : uint8_t { kExact, kSuffix, kRegex };
  Kind kind = Kind::kExact;
  std::string text;  // as written, for reasons
  std::string key;   // kExact: the name; kSuffix: "example.com"; kRegex: the expression
  std::shared_ptr<const re2::RE2> regex;  // kRegex only

  // Parses `text`; nullopt with `*error` set when it is none of the three forms.
  static std::optional<HostPattern> Parse(std::string_view text, std::string* error);
  bool Matches(std::string_view name) const;
};

// Everything the engine knows, or can find out, about the flow being decided. RuleTable asks
// for each fact only when a rule it tries needs it; implementations compute lazily and keep the
// answer for the rest of the decision.
class FlowFacts {
 public:
  virtual ~FlowFacts() = default;
  virtual const FlowQuestion& question() const = 0;
  virtual WallTime wall_now() const = 0;
  // Known names of the remote end, best first; empty when none is known.
  virtual std::span<const KnownName> names() = 0;
  // Whether an inspect verdict could still teach a name or the app protocol: outbound TCP,
  // no payload asked for yet, inspection enabled.
  virtual bool inspectable() const = 0;
  // The classification of the payload; nullptr when there is no payload or no classifier.
  virtual const AppClassification* app() = 0;
  // The process behind the local end.
  virtual const ProcessLookup& process() = 0;
  // What an inspect verdict should ask for: 1 (the first data packet, whole) before any payload
  // was seen, more when a reader learnt from a first packet how much it needs.
  virtual uint32_t inspect_bytes() const { return 1; }
};

// Facts of the question alone: no names, no payload reading, no process. For callers without an
// engine (tests, `tollgate rules test` before the daemon has learnt anything).
class QuestionFacts : public FlowFacts {
 public:
  explicit QuestionFacts(const FlowQuestion& question,
                         WallTime now = std::chrono::system_clock::now())
      : question_(question), now_(now) {}
  const FlowQuestion& question() const override { return question_; }
  WallTime wall_now() const override { return now_; }
  std::span<const KnownName> names() override { return {}; }
  bool inspectable() const override { return false; }
  const AppClassification* app() override { return nullptr; }
  const ProcessLookup& process() override { return none_; }

 private:
  const FlowQuestion& question_;
  WallTime now_;
  ProcessLookup none_{Attribution::kUnavailable, {}, "no process lookup here"};
};

// One [[rule]] as written. Conditions left empty do not constrain the flow.
struct Rule {
  std::string name;  // unique across all loaded files
  Action action = Action::kDeny;
  int32_t priority = 0;
  std::string origin;  // "file:line:col" of its name, so messages can point back at it

  std::optional<Direction> direction;
  std::vector<uint8_t> protocols;                       // IP protocol numbers (ipproto::k*)
  std::vector<PortRange> ports;                         // destination port; TCP and UDP only
  std::vector<IpNetwork> remote;                        // `ip` and `cidr`: the other host's address
  std::vector<HostPattern> hosts;                       // `host`: a name of the remote end
  std::vector<std::shared_ptr<const Blocklist>> lists;  // `list`: a name of the remote end is
                                                        // on one of these
  std::vector<uint32_t> uids;                           // `user` (resolved at load) and `uid`
  std::vector<std::string> exes;                        // `exe`: absolute paths or globs (fnmatch)
  std::vector<std::string> units;                       // `unit`: names or globs
  std::vector<std::string> app_protocols;  // `app_protocol`: classifier names, as written

  std::optional<WallTime> expires;   // never matches at or after this time
  bool once = false;                 // matches one flow, then is used up
  std::optional<Action> on_unknown;  // decides when a fact a condition needs cannot be learnt

  // Conditions on the question alone (direction, protocol, port, remote). Does not allocate.
  bool MatchesTuple(const FlowQuestion& question) const;
  // Whether the rule needs a name of the remote end (host or list).
  bool NeedsName() const { return !hosts.empty() || !lists.empty(); }
  // Whether any condition could be left undecided (and so on_unknown could apply).
  bool HasFactConditions() const {
    return NeedsName() || !uids.empty() || !exes.empty() || !units.empty() ||
           !app_protocols.empty();
  }
};

// What loading a rule file may refer to besides the file itself.
struct RuleLoadContext {
  // Blocklists configured in the settings, by name; a rule's `list` must name one of them.
  const std::map<std::string, std::shared_ptr<const Blocklist>>* blocklists = nullptr;
  // Validates `app_protocol` names; without one, a rule with app_protocol is refused.
  const AppClassifier* classifier = nullptr;
  // user name -> uid. Defaults to the password database (getpwnam_r).
  std::function<std::optional<uint32_t>(const std::string&)> lookup_user;
};

// A decision and how it came about.
struct Decision {
  Verdict verdict;
  const Rule* rule = nullptr;  // the deciding (or inspection-asking) rule; nullptr for default
};

// The rules in evaluation order plus the default action, with an index so that a flow is tried
// only against rules that can match it: rules whose every `host` is exact or `*.suffix` are
// filed under those names, rules with `ip`/`cidr` (and no name condition) under their networks,
// the rest (port-only rules, regex hosts, lists, process conditions) are tried for every flow.
// Immutable once built (except for the used-up flags of `once` rules, which are atomic), so any
// number of threads may decide against it while a reload builds the next one.
class RuleTable {
 public:
  // Sorts into evaluation order (see the top of this file), precomputes reasons and the index.
  // Fails on a duplicate name, an `inspect` action or an `inspect` default.
  static Expected<std::shared_ptr<const RuleTable>> Build(std::vector<Rule> rules,
                                                          Action default_action);
  // No rules: everything gets `default_action`. For a daemon that has no rules directory yet.
  static std::shared_ptr<const RuleTable> Empty(Action default_action);

  // The decision for the flow `facts` describes. Uses up a matching `once` rule unless `dry_run`
  // (what `tollgate rules test` asks: what would this flow get). Allocates only the reason
  // string (and whatever the facts allocate).
  Decision Decide(FlowFacts& facts, bool dry_run = false) const;

  // Convenience over QuestionFacts: the question alone (no names, no process).
  const Rule* Match(const FlowQuestion& question) const;
  Verdict Decide(const FlowQuestion& question) const;

  const std::vector<Rule>& rules() const { return rules_; }  // in evaluation order
  Action default_action() const { return default_action_; }
  // The conditions of rules()[index] as written: `tcp port 23`.
  const std::string& description(size_t index) const { return descriptions_[index]; }
  // Whether the `once` rule at `index` has been used up.
  bool used_up(size_t index) const { return used_[index].load(std::memory_order_relaxed); }
  // Marks the `once` rule `name` used (a reload carrying over what the old table used).
  void MarkUsed(std::string_view name) const;

 private:
  enum class Tri : uint8_t { kNo, kYes, kUnknown };
  struct Trial;  // the outcome of trying one rule, with what its reason needs

  RuleTable(std::vector<Rule> rules, Action default_action);
  void BuildIndex();
  // Candidate rule indices for `facts`, ascending (= evaluation order), into `out`.
  void Candidates(FlowFacts& facts, std::vector<uint32_t>& out) const;
  Tri Try(const Rule& rule, FlowFacts& facts, Trial& trial) const;

  std::vector<Rule> rules_;
  std::vector<std::string> descriptions_;      // parallel to rules_
  std::unique_ptr<std::atomic<bool>[]> used_;  // parallel to rules_; `once` rules only
  Action default_action_;

  // The index (rule indices, ascending in each list).
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct AddressHash {
    size_t operator()(const IpAddress& ip) const;
  };
  using ByName = std::unordered_map<std::string, std::vector<uint32_t>, NameHash, std::equal_to<>>;
  ByName by_exact_host_;
  ByName by_host_suffix_;  // "*.example.com" filed under "example.com"
  // Rules whose every remote network can be looked up: one bucket per (family, prefix length)
  // in use, keyed by the masked address, so a flow costs one lookup per distinct prefix length.
  struct NetworkBucket {
    uint8_t family = 0;
    uint8_t prefix_len = 0;
    std::unordered_map<IpAddress, std::vector<uint32_t>, AddressHash> rules;
  };
  std::vector<NetworkBucket> by_network_;
  std::vector<uint32_t> unindexed_;  // tried for every flow
  // unindexed_ plus every rule with a host or list: tried when no name of the flow is known, so
  // a rule that would need one is seen (and the flow inspected, or on_unknown applied).
  std::vector<uint32_t> unindexed_and_named_;
  bool has_name_rules_ = false;
  // Reasons for match and on_unknown without the host/list part, which depends on the flow.
  std::vector<std::string> tuple_descriptions_;
};

// The rules of one file, in file order. `source_name` is what messages call the text (its path).
// Checks everything that one file can get wrong, including duplicate names within it; names
// across files are checked by RuleTable::Build. Errors: kMalformed (not TOML) or kInvalidArgument.
Expected<std::vector<Rule>> ParseRuleFile(std::string_view text, const std::string& source_name,
                                          const RuleLoadContext& context = {});

// Every `*.toml` regular file (symlinks followed, dot-files skipped) directly in `dir`, in lexical
// order of file name, built into one table. Any error in any file fails the whole load, naming
// `file:line:col`, so the caller keeps the rules in force. A missing directory is kNotFound; the
// caller decides whether that means "no rules" (the default path on a fresh install) or a mistake.
Expected<std::shared_ptr<const RuleTable>> LoadRuleFiles(const std::string& dir,
                                                         Action default_action,
                                                         const RuleLoadContext& context = {});

}  // namespace tollgate::analysis
