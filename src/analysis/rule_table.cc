#include "analysis/rule_table.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <span>
#include <unordered_map>

// Keeps the default TOML_EXCEPTIONS=1 (see common/toml_report.h).
#include <toml++/toml.h>

#include "common/toml_report.h"

namespace tollgate::analysis {
namespace {

using toml_report::Before;
using toml_report::Position;
using toml_report::Problems;
using toml_report::Quote;

// --- rule file vocabulary ---

constexpr std::string_view kRuleKeys[] = {"name", "action", "priority", "protocol",
                                          "port", "ip",     "cidr",     "direction"};

// Keys the analysis engine (issue 4) gives a meaning. Refused by name so that a rule written for
// it fails loudly here instead of being applied without the condition, which would widen it.
constexpr std::string_view kLaterConditions[] = {"host", "user", "uid",         "exe",
                                                 "unit", "list", "app_protocol"};
constexpr std::string_view kLaterLifetime[] = {"expires", "once"};
constexpr std::string_view kLaterOther[] = {"on_unknown"};

bool OneOf(std::string_view key, std::span<const std::string_view> keys) {
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

struct NamedProtocol {
  std::string_view name;
  uint8_t number;
};
constexpr NamedProtocol kProtocols[] = {{"tcp", ipproto::kTcp},
                                        {"udp", ipproto::kUdp},
                                        {"icmp", ipproto::kIcmp},
                                        {"icmpv6", ipproto::kIcmpV6}};

bool HasPorts(uint8_t protocol) { return protocol == ipproto::kTcp || protocol == ipproto::kUdp; }

// Names as they appear in reasons, logs and CLI arguments: kept to a set that needs no quoting
// or escaping anywhere.
bool IsRuleName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
           c == ':';
  });
}

std::optional<PortRange> ParsePortRange(const toml::node& node) {
  if (const auto* number = node.as_integer()) {
    if (number->get() < 0 || number->get() > 65535) return std::nullopt;
    auto port = static_cast<uint16_t>(number->get());
    return PortRange{port, port};
  }
  const auto* text = node.as_string();
  if (text == nullptr) return std::nullopt;
  std::string_view s = text->get();
  size_t dash = s.find('-');
  auto first = toml_report::ParseDecimalUint16(s.substr(0, dash));
  auto last =
      dash == std::string_view::npos ? first : toml_report::ParseDecimalUint16(s.substr(dash + 1));
  if (!first || !last || *first > *last) return std::nullopt;
  return PortRange{*first, *last};
}

// Reads one [[rule]] table into a Rule, reporting every problem it has.
class RuleReader {
 public:
  RuleReader(const std::string& source, Problems& problems)
      : source_(source), problems_(problems) {}

  // `index` counts rules in the file from 1, to name a rule that has no usable name.
  Rule Read(const toml::table& entry, size_t index) {
    Rule rule;
    ReadName(entry, index, rule);
    if (entry.get("action") == nullptr) {
      Add(entry, " has no action; add action = \"allow\", \"deny\" or \"reject\"");
    }
    const toml::node* port_node = nullptr;
    const toml::node* ip_node = nullptr;
    const toml::node* cidr_node = nullptr;
    for (auto&& [key, node] : entry) {
      const std::string k(key.str());
      if (k == "name") continue;  // read first, above: every other message names the rule
      if (k == "action") {
        ReadAction(node, rule);
      } else if (k == "priority") {
        ReadPriority(node, rule);
      } else if (k == "protocol") {
        ReadProtocols(node, rule);
      } else if (k == "port") {
        port_node = &node;
        ReadPorts(node, rule);
      } else if (k == "ip") {
        ip_node = &node;
        ReadAddresses(node, /*networks=*/false, rule);
      } else if (k == "cidr") {
        cidr_node = &node;
        ReadAddresses(node, /*networks=*/true, rule);
      } else if (k == "direction") {
        ReadDirection(node, rule);
      } else if (OneOf(k, kLaterConditions)) {
        AddAt(key.source().begin,
              k + " is not supported by this version yet; applying the rule without it would "
                  "match flows it was not meant to");
      } else if (OneOf(k, kLaterLifetime)) {
        AddAt(key.source().begin,
              k + " is not supported by this version yet; applying the rule without it would "
                  "keep it in force longer than meant");
      } else if (OneOf(k, kLaterOther)) {
        AddAt(key.source().begin, k + " is not supported by this version yet");
      } else {
        AddAt(key.source().begin, "unknown key " + Quote(k) + toml_report::KeyHint(k, kRuleKeys));
      }
    }
    // ip and cidr are one condition (the remote address); allowing both would raise the question
    // whether they combine with "and" or "or". Report at whichever comes second in the file.
    if (ip_node != nullptr && cidr_node != nullptr) {
      const toml::node* later =
          Before(ip_node->source().begin, cidr_node->source().begin) ? cidr_node : ip_node;
      AddAt(later->source().begin,
            "use either ip or cidr, not both (both match the remote address; cidr also takes "
            "plain addresses)");
    }
    if (port_node != nullptr && !rule.ports.empty()) {
      for (uint8_t protocol : rule.protocols) {
        if (!HasPorts(protocol)) {
          AddAt(port_node->source().begin,
                "port applies only to tcp and udp, but protocol also lists " +
                    ProtocolName(protocol) + "; put the " + ProtocolName(protocol) +
                    " part in a rule of its own");
          break;
        }
      }
    }
    return rule;
  }

 private:
  void ReadName(const toml::table& entry, size_t index, Rule& rule) {
    label_ = "rule #" + std::to_string(index);
    const toml::node* node = entry.get("name");
    if (node == nullptr) {
      Add(entry, " has no name; every rule needs name = \"...\", unique across all rule files");
      return;
    }
    const auto* value = node->as_string();
    if (value == nullptr || !IsRuleName(value->get())) {
      Must(*node, "name",
           "1 to 64 letters, digits, \"-\", \"_\", \".\" or \":\" (it appears in every verdict "
           "reason)");
      return;
    }
    rule.name = value->get();
    rule.origin = Position(source_, node->source().begin);
    label_ = "rule " + Quote(rule.name);
  }

  void ReadAction(const toml::node& node, Rule& rule) {
    const auto* value = node.as_string();
    std::string_view text = value != nullptr ? std::string_view(value->get()) : "";
    if (text == "allow") {
      rule.action = Action::kAllow;
    } else if (text == "deny") {
      rule.action = Action::kDeny;
    } else if (text == "reject") {
      rule.action = Action::kReject;
    } else {
      Must(node, "action", "\"allow\", \"deny\" or \"reject\"");
    }
  }

  void ReadPriority(const toml::node& node, Rule& rule) {
    const auto* value = node.as_integer();
    if (value == nullptr || value->get() < INT32_MIN || value->get() > INT32_MAX) {
      Must(node, "priority", "an integer from -2147483648 to 2147483647");
      return;
    }
    rule.priority = static_cast<int32_t>(value->get());
  }

  void ReadDirection(const toml::node& node, Rule& rule) {
    const auto* value = node.as_string();
    std::string_view text = value != nullptr ? std::string_view(value->get()) : "";
    if (text == "outbound") {
      rule.direction = Direction::kOutbound;
    } else if (text == "inbound") {
      rule.direction = Direction::kInbound;
    } else {
      Must(node, "direction", "\"outbound\" or \"inbound\"");
    }
  }

  void ReadProtocols(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "protocol", "protocol", [&](const toml::node& one) {
      if (const auto* value = one.as_string()) {
        for (const auto& p : kProtocols) {
          if (value->get() == p.name) {
            rule.protocols.push_back(p.number);
            return;
          }
        }
      }
      Must(one, "protocol", "\"tcp\", \"udp\", \"icmp\" or \"icmpv6\", or a list of them");
    });
  }

  void ReadPorts(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "port", "port", [&](const toml::node& one) {
      if (auto range = ParsePortRange(one)) {
        rule.ports.push_back(*range);
        return;
      }
      Must(one, "port",
           "a port number from 0 to 65535, a range like \"80-90\" (first <= last), or a list of "
           "them");
    });
  }

  void ReadAddresses(const toml::node& node, bool networks, Rule& rule) {
    const char* key = networks ? "cidr" : "ip";
    ForOneOrEach(node, key, "remote address", [&](const toml::node& one) {
      const auto* value = one.as_string();
      if (!networks) {
        std::optional<IpAddress> ip;
        if (value != nullptr) ip = IpAddress::Parse(value->get());
        if (!ip) {
          Must(one, key, "an IPv4 or IPv6 address, or a list of them (networks go in cidr)");
          return;
        }
        rule.remote.push_back(IpNetwork{*ip, static_cast<uint8_t>(ip->family == 4 ? 32 : 128)});
        return;
      }
      std::optional<IpNetwork> network;
      if (value != nullptr) network = IpNetwork::Parse(value->get());
      if (!network) {
        Must(one, key,
             "a network like \"10.0.0.0/8\" or \"2001:db8::/32\" (or a plain address), or a list "
             "of them");
        return;
      }
      // Host bits set is almost always a typo ("192.168.1.0/16"); widening it silently would let
      // a deny cover far more than its author looked at.
      IpNetwork masked = network->Masked();
      if (!(masked == *network)) {
        AddAt(one.source().begin, "cidr " + Quote(value->get()) +
                                      " has host bits set; did you mean " +
                                      Quote(masked.ToString()) + "?");
        return;
      }
      rule.remote.push_back(*network);
    });
  }

  // A condition is one value or a list of values; an empty list is refused because it could mean
  // either "any" or "none", and the author should say which by leaving the key out.
  void ForOneOrEach(const toml::node& node, std::string_view key, std::string_view what,
                    const std::function<void(const toml::node&)>& one) {
    const auto* list = node.as_array();
    if (list == nullptr) {
      one(node);
      return;
    }
    if (list->empty()) {
      AddAt(node.source().begin, std::string(key) + " must not be an empty list (leave it out to " +
                                     "match any " + std::string(what) + ")");
      return;
    }
    for (const toml::node& element : *list) one(element);
  }

  void Must(const toml::node& node, std::string_view key, std::string_view expected) {
    AddAt(node.source().begin, toml_report::Must(key, expected, node));
  }
  void AddAt(const toml::source_position& where, const std::string& message) {
    problems_.Add(where, label_ + ": " + message);
  }
  // At the rule's own table, e.g. `rule #2 has no name`.
  void Add(const toml::table& entry, const std::string& message) {
    problems_.Add(entry.source().begin, label_ + message);
  }

  const std::string& source_;
  Problems& problems_;
  std::string label_;  // `rule "no-telnet"` or `rule #3`: how messages name the rule
};

// ",".join of at most 8 items, then " and N more": a reason must stay a line, even for a rule
// with a thousand networks.
template <typename T, typename F>
std::string JoinLimited(const std::vector<T>& items, F text) {
  constexpr size_t kShown = 8;
  std::string out;
  for (size_t i = 0; i < items.size() && i < kShown; ++i) {
    if (i > 0) out += ',';
    out += text(items[i]);
  }
  if (items.size() > kShown) out += " and " + std::to_string(items.size() - kShown) + " more";
  return out;
}

std::string DescribeConditions(const Rule& rule) {
  std::string out;
  auto part = [&out](const std::string& text) {
    if (!out.empty()) out += ' ';
    out += text;
  };
  if (rule.direction) part(*rule.direction == Direction::kOutbound ? "outbound" : "inbound");
  if (!rule.protocols.empty()) part(JoinLimited(rule.protocols, ProtocolName));
  if (!rule.ports.empty()) {
    part("port " + JoinLimited(rule.ports, [](const PortRange& r) {
           return r.first == r.last ? std::to_string(r.first)
                                    : std::to_string(r.first) + "-" + std::to_string(r.last);
         }));
  }
  if (!rule.remote.empty()) {
    part("remote " + JoinLimited(rule.remote, [](const IpNetwork& n) { return n.ToString(); }));
  }
  return out.empty() ? "any flow" : out;
}

bool Blocks(Action action) { return action == Action::kDeny || action == Action::kReject; }

}  // namespace

// --- IpNetwork ---

std::optional<IpNetwork> IpNetwork::Parse(std::string_view text) {
  size_t slash = text.find('/');
  auto address = IpAddress::Parse(text.substr(0, slash));
  if (!address) return std::nullopt;
  const unsigned max_len = address->family == 4 ? 32 : 128;
  unsigned len = max_len;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    len = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      len = len * 10 + static_cast<unsigned>(c - '0');
    }
    if (len > max_len) return std::nullopt;
  }
  return IpNetwork{*address, static_cast<uint8_t>(len)};
}

IpNetwork IpNetwork::Masked() const {
  IpNetwork out = *this;
  for (size_t i = 0; i < out.address.bytes.size(); ++i) {
    size_t bit = i * 8;
    if (bit >= prefix_len) {
      out.address.bytes[i] = 0;
    } else if (prefix_len - bit < 8) {
      out.address.bytes[i] &= static_cast<uint8_t>(0xff << (8 - (prefix_len - bit)));
    }
  }
  return out;
}

bool IpNetwork::Contains(const IpAddress& ip) const {
  if (ip.family != address.family || address.family == 0) return false;
  const size_t whole = prefix_len / 8;
  if (std::memcmp(ip.bytes.data(), address.bytes.data(), whole) != 0) return false;
  const unsigned rest = prefix_len % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.bytes[whole] & mask) == (address.bytes[whole] & mask);
}

std::string IpNetwork::ToString() const {
  const unsigned host_len = address.family == 4 ? 32 : 128;
  if (prefix_len == host_len) return address.ToString();
  return address.ToString() + "/" + std::to_string(prefix_len);
}

// --- Rule ---

bool Rule::Matches(const FlowQuestion& question) const {
  const FlowTuple& tuple = question.tuple;
  if (direction && *direction != question.direction) return false;
  if (!protocols.empty() &&
      std::find(protocols.begin(), protocols.end(), tuple.protocol) == protocols.end()) {
    return false;
  }
  if (!ports.empty()) {
    // For ICMP the tuple's "ports" are type and code; a port rule must not match them.
    if (!HasPorts(tuple.protocol)) return false;
    if (std::none_of(ports.begin(), ports.end(),
                     [&](const PortRange& r) { return r.Contains(tuple.dst_port); })) {
      return false;
    }
  }
  if (!remote.empty()) {
    const IpAddress& other = question.direction == Direction::kOutbound ? tuple.dst : tuple.src;
    if (std::none_of(remote.begin(), remote.end(),
                     [&](const IpNetwork& n) { return n.Contains(other); })) {
      return false;
    }
  }
  return true;
}

// --- RuleTable ---

RuleTable::RuleTable(std::vector<Rule> rules, Action default_action)
    : rules_(std::move(rules)), default_action_(default_action) {
  reasons_.reserve(rules_.size());
  for (const Rule& rule : rules_) {
    reasons_.push_back(std::string(ActionName(rule.action)) + ": rule \"" + rule.name + "\" (" +
                       DescribeConditions(rule) + ")");
  }
}

Expected<std::shared_ptr<const RuleTable>> RuleTable::Build(std::vector<Rule> rules,
                                                            Action default_action) {
  if (default_action == Action::kInspect) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "the default action must be allow, deny or reject, not inspect");
  }
  auto at = [](const Rule& rule) { return rule.origin.empty() ? "" : rule.origin + ": "; };
  std::unordered_map<std::string_view, const Rule*> by_name;
  by_name.reserve(rules.size());
  for (const Rule& rule : rules) {
    if (rule.action == Action::kInspect) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        at(rule) + "rule \"" + rule.name +
                            "\": a rule's action must be allow, deny or reject, not inspect");
    }
    auto [it, inserted] = by_name.emplace(rule.name, &rule);
    if (!inserted) {
      return Unexpected(ErrorCode::kInvalidArgument,
                        at(rule) + "rule name \"" + rule.name + "\" is already used at " +
                            it->second->origin +
                            "; rule names must be unique across all rule "
                            "files");
    }
  }
  by_name.clear();  // its keys point into `rules`, which is about to move
  // Stable, so load order breaks the remaining ties.
  std::stable_sort(rules.begin(), rules.end(), [](const Rule& a, const Rule& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return Blocks(a.action) && !Blocks(b.action);
  });
  return std::shared_ptr<const RuleTable>(new RuleTable(std::move(rules), default_action));
}

std::shared_ptr<const RuleTable> RuleTable::Empty(Action default_action) {
  TG_CHECK(default_action != Action::kInspect);
  return std::shared_ptr<const RuleTable>(new RuleTable({}, default_action));
}

const Rule* RuleTable::Match(const FlowQuestion& question) const {
  for (const Rule& rule : rules_) {
    if (rule.Matches(question)) return &rule;
  }
  return nullptr;
}

Verdict RuleTable::Decide(const FlowQuestion& question) const {
  Verdict verdict;
  verdict.id = question.id;
  verdict.cache = CacheScope::kFlow;
  if (const Rule* rule = Match(question)) {
    verdict.action = rule->action;
    verdict.reason = reasons_[static_cast<size_t>(rule - rules_.data())];
  } else {
    verdict.action = default_action_;
    verdict.reason = kDefaultReason;
  }
  return verdict;
}

// --- loading ---

Expected<std::vector<Rule>> ParseRuleFile(std::string_view text, const std::string& source_name) {
  auto root = toml_report::ParseToml(text, source_name);
  if (!root) return Unexpected(root.error());

  Problems problems(source_name);
  std::vector<Rule> rules;
  for (auto&& [key, node] : *root) {
    const std::string k(key.str());
    if (k != "rule") {
      problems.Add(key.source().begin,
                   (node.is_table() ? "unknown table [" + k + "]" : "unknown key " + Quote(k)) +
                       " at the top level; rules are written as [[rule]] tables");
      continue;
    }
    const auto* entries = node.as_array();
    if (entries == nullptr) {
      problems.Add(node.source().begin,
                   toml_report::Must("rule", "an array of tables ([[rule]])", node));
      continue;
    }
    RuleReader reader(source_name, problems);
    // name -> origin, for duplicates within this file; Build checks across files.
    std::unordered_map<std::string, std::string> seen;
    for (size_t i = 0; i < entries->size(); ++i) {
      const toml::node& element = *entries->get(i);
      const auto* entry = element.as_table();
      if (entry == nullptr) {
        problems.Add(element.source().begin,
                     toml_report::Must("rule #" + std::to_string(i + 1), "a table", element));
        continue;
      }
      Rule rule = reader.Read(*entry, i + 1);
      if (!rule.name.empty()) {
        auto [it, inserted] = seen.emplace(rule.name, rule.origin);
        if (!inserted) {
          problems.Add(entry->get("name")->source().begin,
                       "rule name " + Quote(rule.name) + " is already used at " + it->second +
                           "; rule names must be unique across all rule files");
        }
      }
      rules.push_back(std::move(rule));
    }
  }
  if (problems.any()) return Unexpected(problems.ToError());
  return rules;
}

Expected<std::shared_ptr<const RuleTable>> LoadRuleFiles(const std::string& dir,
                                                         Action default_action) {
  namespace fs = std::filesystem;
  const std::string what = "cannot read rules directory " + dir;
  std::error_code ec;
  std::vector<std::string> names;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    // Dot-files are editor and package-manager leftovers (".#x.toml", ".x.toml.swp").
    if (name.empty() || name[0] == '.' || name.size() <= 5 ||
        name.compare(name.size() - 5, 5, ".toml") != 0) {
      continue;
    }
    std::error_code type_ec;
    if (it->is_directory(type_ec)) continue;
    // Anything else named *.toml is meant as rules: a dangling link or a FIFO fails the load
    // below with its own message instead of being skipped without a word.
    names.push_back(std::move(name));
  }
  if (ec) {
    Error error = Error::System(what, ec.value());
    if (ec == std::errc::no_such_file_or_directory) error.code = ErrorCode::kNotFound;
    return Unexpected(std::move(error));
  }
  std::sort(names.begin(), names.end());

  std::vector<Rule> rules;
  for (const std::string& name : names) {
    std::string path = dir + (dir.ends_with('/') ? "" : "/") + name;
    auto text = toml_report::ReadSmallFile(path, kMaxRuleFileBytes, "rule file");
    if (!text) return Unexpected(text.error());
    auto file_rules = ParseRuleFile(*text, path);
    if (!file_rules) return Unexpected(file_rules.error());
    std::move(file_rules->begin(), file_rules->end(), std::back_inserter(rules));
  }
  return RuleTable::Build(std::move(rules), default_action);
}

// --- RuleTableAnalyzer ---

RuleTableAnalyzer::RuleTableAnalyzer(std::shared_ptr<const RuleTable> table)
    : table_(std::move(table)) {
  TG_CHECK(table_ != nullptr);
}

Verdict RuleTableAnalyzer::Decide(const FlowQuestion& question) {
  // The local reference keeps this table alive for the whole decision even if Replace() runs now.
  std::shared_ptr<const RuleTable> table = Current();
  return table->Decide(question);
}

void RuleTableAnalyzer::Replace(std::shared_ptr<const RuleTable> table) {
  TG_CHECK(table != nullptr);
  {
    std::lock_guard lock(mutex_);
    table_.swap(table);
  }
  // `table` now holds the old one; if this was its last user it is freed here, outside the lock,
  // so deciding threads never wait for a large table's destruction.
}

std::shared_ptr<const RuleTable> RuleTableAnalyzer::Current() const {
  std::lock_guard lock(mutex_);
  return table_;
}

}  // namespace tollgate::analysis
