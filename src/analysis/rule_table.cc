#include "analysis/rule_table.h"

#include <fnmatch.h>
#include <pwd.h>

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
#include <re2/re2.h>
#include <toml++/toml.h>

#include "common/toml_report.h"

namespace tollgate::analysis {
namespace {

using toml_report::Before;
using toml_report::Position;
using toml_report::Problems;
using toml_report::Quote;

// --- rule file vocabulary ---

constexpr std::string_view kRuleKeys[] = {
    "name", "action",    "priority",     "protocol", "port", "ip",
    "cidr", "direction", "host",         "list",     "user", "uid",
    "exe",  "unit",      "app_protocol", "expires",  "once", "on_unknown"};

struct NamedProtocol {
  std::string_view name;
  uint8_t number;
};
constexpr NamedProtocol kProtocols[] = {{"tcp", ipproto::kTcp},
                                        {"udp", ipproto::kUdp},
                                        {"icmp", ipproto::kIcmp},
                                        {"icmpv6", ipproto::kIcmpV6}};

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

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

std::optional<uint32_t> LookUpUser(const std::string& name) {
  struct passwd entry;
  struct passwd* found = nullptr;
  std::vector<char> buffer(16384);
  if (getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return std::nullopt;
  }
  return found->pw_uid;
}

// Reads one [[rule]] table into a Rule, reporting every problem it has.
class RuleReader {
 public:
  RuleReader(const std::string& source, const RuleLoadContext& context, Problems& problems)
      : source_(source), context_(context), problems_(problems) {}

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
    const toml::node* on_unknown_node = nullptr;
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
      } else if (k == "host") {
        ReadHosts(node, rule);
      } else if (k == "list") {
        ReadLists(node, rule);
      } else if (k == "user") {
        ReadUsers(node, rule);
      } else if (k == "uid") {
        ReadUids(node, rule);
      } else if (k == "exe") {
        ReadPaths(node, "exe", /*absolute=*/true, rule.exes);
      } else if (k == "unit") {
        ReadPaths(node, "unit", /*absolute=*/false, rule.units);
      } else if (k == "app_protocol") {
        ReadAppProtocols(node, rule);
      } else if (k == "expires") {
        ReadExpires(node, rule);
      } else if (k == "once") {
        if (const auto* value = node.as_boolean()) {
          rule.once = value->get();
        } else {
          Must(node, "once", "true or false");
        }
      } else if (k == "on_unknown") {
        on_unknown_node = &node;
        rule.on_unknown = ReadActionValue(node, "on_unknown");
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
    if (on_unknown_node != nullptr && !rule.HasFactConditions()) {
      AddAt(on_unknown_node->source().begin,
            "on_unknown has no effect: the rule has no host, list, user, uid, exe, unit or "
            "app_protocol condition whose fact could be unknown");
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
    if (auto action = ReadActionValue(node, "action")) rule.action = *action;
  }

  std::optional<Action> ReadActionValue(const toml::node& node, std::string_view key) {
    const auto* value = node.as_string();
    std::string_view text = value != nullptr ? std::string_view(value->get()) : "";
    if (text == "allow") return Action::kAllow;
    if (text == "deny") return Action::kDeny;
    if (text == "reject") return Action::kReject;
    Must(node, key, "\"allow\", \"deny\" or \"reject\"");
    return std::nullopt;
  }

  void ReadHosts(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "host", "host", [&](const toml::node& one) {
      const auto* value = one.as_string();
      std::string error;
      std::optional<HostPattern> pattern;
      if (value != nullptr) pattern = HostPattern::Parse(value->get(), &error);
      if (!pattern) {
        if (value == nullptr || error.empty()) {
          Must(one, "host",
               "a name (\"example.com\"), \"*.\" and a name for the names below it, or "
               "\"/regex/\", or a list of them");
        } else {
          AddAt(one.source().begin, "host " + Quote(value->get()) + ": " + error);
        }
        return;
      }
      rule.hosts.push_back(std::move(*pattern));
    });
  }

  void ReadLists(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "list", "list", [&](const toml::node& one) {
      const auto* value = one.as_string();
      if (value == nullptr) {
        Must(one, "list", "the name of a blocklist from [blocklists] in the settings");
        return;
      }
      const auto* lists = context_.blocklists;
      auto it = lists != nullptr ? lists->find(value->get()) : decltype(lists->end()){};
      if (lists == nullptr || it == lists->end()) {
        std::string known;
        if (lists != nullptr) {
          for (const auto& [name, list] : *lists) known += (known.empty() ? "" : ", ") + name;
        }
        AddAt(
            one.source().begin,
            "no blocklist named " + Quote(value->get()) +
                (known.empty() ? std::string("; none is configured ([blocklists] in the settings)")
                               : "; configured: " + known));
        return;
      }
      rule.lists.push_back(it->second);
    });
  }

  void ReadUsers(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "user", "user", [&](const toml::node& one) {
      const auto* value = one.as_string();
      if (value == nullptr || value->get().empty()) {
        Must(one, "user", "a user name, or a list of them (numbers go in uid)");
        return;
      }
      std::optional<uint32_t> uid =
          context_.lookup_user ? context_.lookup_user(value->get()) : LookUpUser(value->get());
      if (!uid) {
        AddAt(one.source().begin, "no user named " + Quote(value->get()) +
                                      " on this system (a rule for a user who does not exist "
                                      "would silently match nothing)");
        return;
      }
      rule.uids.push_back(*uid);
    });
  }

  void ReadUids(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "uid", "uid", [&](const toml::node& one) {
      const auto* value = one.as_integer();
      if (value == nullptr || value->get() < 0 || value->get() >= int64_t{kUnknownId}) {
        Must(one, "uid", "a user id from 0 to 4294967294, or a list of them");
        return;
      }
      rule.uids.push_back(static_cast<uint32_t>(value->get()));
    });
  }

  void ReadPaths(const toml::node& node, std::string_view key, bool absolute,
                 std::vector<std::string>& out) {
    ForOneOrEach(node, key, key, [&](const toml::node& one) {
      const auto* value = one.as_string();
      const bool ok = value != nullptr && !value->get().empty() && value->get().size() <= 4096 &&
                      value->get().find('\0') == std::string::npos &&
                      (!absolute || value->get()[0] == '/');
      if (!ok) {
        Must(one, key,
             absolute ? "an absolute path or glob (\"/usr/bin/curl\", \"/opt/*/bin/*\"), or a "
                        "list of them"
                      : "a unit name or glob (\"sshd.service\", \"user@*.service\"), or a list "
                        "of them");
        return;
      }
      out.push_back(value->get());
    });
  }

  void ReadAppProtocols(const toml::node& node, Rule& rule) {
    ForOneOrEach(node, "app_protocol", "app_protocol", [&](const toml::node& one) {
      const auto* value = one.as_string();
      if (value == nullptr || value->get().empty()) {
        Must(one, "app_protocol", "a protocol name such as \"TLS\" or \"BitTorrent\"");
        return;
      }
      const AppClassifier* classifier = context_.classifier;
      if (classifier == nullptr) {
        AddAt(one.source().begin,
              "app_protocol needs the protocol classifier (nDPI), which is not available");
        return;
      }
      if (EqualsIgnoringCase(value->get(), "Unknown")) {
        AddAt(one.source().begin,
              "app_protocol \"Unknown\" never matches: a flow the classifier cannot name is "
              "decided by on_unknown");
        return;
      }
      if (!classifier->KnowsProtocol(value->get())) {
        std::string suggestion = classifier->Suggest(value->get());
        AddAt(
            one.source().begin,
            "unknown app_protocol " + Quote(value->get()) +
                (suggestion.empty() ? std::string() : "; did you mean " + Quote(suggestion) + "?"));
        return;
      }
      rule.app_protocols.push_back(value->get());
    });
  }

  void ReadExpires(const toml::node& node, Rule& rule) {
    const auto* value = node.as_date_time();
    if (value != nullptr && !value->get().offset) {
      AddAt(node.source().begin,
            "expires has no UTC offset; add Z or +hh:mm (a local time would change meaning with "
            "the machine's time zone)");
      return;
    }
    if (value == nullptr) {
      Must(node, "expires",
           "a date and time with its offset, like 2026-12-31T18:00:00Z or "
           "2026-12-31T19:00:00+01:00");
      return;
    }
    const toml::date_time& when = value->get();
    const std::chrono::year_month_day day{std::chrono::year{when.date.year},
                                          std::chrono::month{when.date.month},
                                          std::chrono::day{when.date.day}};
    auto t = std::chrono::sys_days{day} + std::chrono::hours{when.time.hour} +
             std::chrono::minutes{when.time.minute} + std::chrono::seconds{when.time.second} -
             std::chrono::minutes{when.offset->minutes};
    rule.expires = std::chrono::time_point_cast<WallTime::duration>(t);
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
  const RuleLoadContext& context_;
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
  if (!rule.hosts.empty()) {
    part("host " + JoinLimited(rule.hosts, [](const HostPattern& h) { return h.text; }));
  }
  if (!rule.lists.empty()) {
    part("list " + JoinLimited(rule.lists, [](const auto& l) { return l->name(); }));
  }
  if (!rule.uids.empty()) {
    part("uid " + JoinLimited(rule.uids, [](uint32_t u) { return std::to_string(u); }));
  }
  if (!rule.exes.empty()) part("exe " + JoinLimited(rule.exes, [](const auto& e) { return e; }));
  if (!rule.units.empty()) part("unit " + JoinLimited(rule.units, [](const auto& u) { return u; }));
  if (!rule.app_protocols.empty()) {
    part("app_protocol " + JoinLimited(rule.app_protocols, [](const auto& a) { return a; }));
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

// --- HostPattern ---

namespace {

// A DNS name as rules write it: labels of letters, digits, '-' and '_' (seen in real names, e.g.
// SRV-style and some CDNs), 1-63 bytes each, 253 in all. Folds to lowercase in place.
bool NormaliseName(std::string& name, std::string* error) {
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty() || name.size() > 253) {
    *error = "a name must have 1 to 253 characters";
    return false;
  }
  size_t label = 0;
  for (char& c : name) {
    if (c == '.') {
      if (label == 0) {
        *error = "empty label (two dots, or a leading dot)";
        return false;
      }
      label = 0;
      continue;
    }
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      *error =
          "names hold letters, digits, '-', '_' and dots; '*' only as \"*.\" at the start, "
          "and regular expressions are written between slashes: \"/.../\"";
      return false;
    }
    if (++label > 63) {
      *error = "a label is longer than 63 characters";
      return false;
    }
  }
  if (label == 0) {
    *error = "empty label at the end";
    return false;
  }
  return true;
}

}  // namespace

std::optional<HostPattern> HostPattern::Parse(std::string_view text, std::string* error) {
  HostPattern pattern;
  pattern.text = std::string(text);
  if (text.size() >= 2 && text.front() == '/' && text.back() == '/') {
    pattern.kind = Kind::kRegex;
    pattern.key = std::string(text.substr(1, text.size() - 2));
    if (pattern.key.empty()) {
      *error = "empty regular expression";
      return std::nullopt;
    }
    RE2::Options options;
    options.set_case_sensitive(false);
    options.set_never_capture(true);
    options.set_log_errors(false);
    options.set_max_mem(1 << 20);  // a rule file is not a place for a 100 MB automaton
    auto regex = std::make_shared<const RE2>(pattern.key, options);
    if (!regex->ok()) {
      *error = "not a valid RE2 regular expression: " + regex->error();
      return std::nullopt;
    }
    pattern.regex = std::move(regex);
    return pattern;
  }
  if (text.starts_with("*.")) {
    pattern.kind = Kind::kSuffix;
    pattern.key = std::string(text.substr(2));
  } else {
    pattern.kind = Kind::kExact;
    pattern.key = std::string(text);
  }
  if (!NormaliseName(pattern.key, error)) return std::nullopt;
  if (pattern.kind == Kind::kExact) pattern.text = pattern.key;
  if (pattern.kind == Kind::kSuffix) pattern.text = "*." + pattern.key;
  return pattern;
}

bool HostPattern::Matches(std::string_view name) const {
  switch (kind) {
    case Kind::kExact:
      return name == key;
    case Kind::kSuffix:
      return name.size() > key.size() && name.ends_with(key) &&
             name[name.size() - key.size() - 1] == '.';
    case Kind::kRegex:
      return RE2::FullMatch(name, *regex);
  }
  return false;
}

const char* NameSourceName(NameSource source) {
  switch (source) {
    case NameSource::kDns:
      return "DNS";
    case NameSource::kSni:
      return "SNI";
    case NameSource::kHttpHost:
      return "Host";
  }
  return "?";
}

// --- Rule ---

bool Rule::MatchesTuple(const FlowQuestion& question) const {
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

size_t RuleTable::AddressHash::operator()(const IpAddress& ip) const {
  uint64_t a = 0;
  uint64_t b = 0;
  std::memcpy(&a, ip.bytes.data(), 8);
  std::memcpy(&b, ip.bytes.data() + 8, 8);
  return std::hash<uint64_t>{}(a * 0x9e3779b97f4a7c15ull ^ b ^ ip.family);
}

// What trying one rule found, for the reason of the verdict it gives.
struct RuleTable::Trial {
  const HostPattern* host = nullptr;  // the pattern a name matched
  const Blocklist* list = nullptr;    // the list a name is on
  const KnownName* host_name = nullptr;
  const KnownName* list_name = nullptr;
  std::string_view list_entry;    // the entry of `list` that matched
  const char* unknown = nullptr;  // which fact is missing, when the rule is undecided
  bool inspect_would_help = false;
};

RuleTable::RuleTable(std::vector<Rule> rules, Action default_action)
    : rules_(std::move(rules)),
      used_(new std::atomic<bool>[rules_.size()]),
      default_action_(default_action) {
  descriptions_.reserve(rules_.size());
  tuple_descriptions_.reserve(rules_.size());
  for (size_t i = 0; i < rules_.size(); ++i) {
    used_[i].store(false, std::memory_order_relaxed);
    descriptions_.push_back(DescribeConditions(rules_[i]));
    Rule tuple_only = rules_[i];
    tuple_only.hosts.clear();
    tuple_only.lists.clear();
    std::string tuple_text = rules_[i].NeedsName() ? DescribeConditions(tuple_only) : "";
    if (tuple_text == "any flow") tuple_text.clear();
    tuple_descriptions_.push_back(std::move(tuple_text));
  }
  BuildIndex();
}

void RuleTable::BuildIndex() {
  for (uint32_t i = 0; i < rules_.size(); ++i) {
    const Rule& rule = rules_[i];
    has_name_rules_ = has_name_rules_ || rule.NeedsName();
    const bool hosts_indexable =
        !rule.hosts.empty() &&
        std::none_of(rule.hosts.begin(), rule.hosts.end(),
                     [](const HostPattern& h) { return h.kind == HostPattern::Kind::kRegex; });
    const bool address_indexable = !rule.remote.empty();
    bool unindexed = false;
    if (hosts_indexable) {
      // Every name condition must hold, so a rule can only match a flow one of whose names one of
      // its patterns matches: filing it under each pattern misses nothing.
      for (const HostPattern& h : rule.hosts) {
        auto& list =
            (h.kind == HostPattern::Kind::kExact ? by_exact_host_ : by_host_suffix_)[h.key];
        if (list.empty() || list.back() != i) list.push_back(i);
      }
    } else if (address_indexable && !rule.NeedsName()) {
      // Likewise the remote address must be in one of its networks.
      for (const IpNetwork& n : rule.remote) {
        auto bucket = std::find_if(by_network_.begin(), by_network_.end(), [&](const auto& b) {
          return b.family == n.address.family && b.prefix_len == n.prefix_len;
        });
        if (bucket == by_network_.end()) {
          by_network_.push_back({n.address.family, n.prefix_len, {}});
          bucket = by_network_.end() - 1;
        }
        auto& list = bucket->rules[n.Masked().address];
        if (list.empty() || list.back() != i) list.push_back(i);
      }
    } else {
      unindexed_.push_back(i);
      unindexed = true;
    }
    if (rule.NeedsName() || unindexed) unindexed_and_named_.push_back(i);
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
    if (rule.action == Action::kInspect || rule.on_unknown == Action::kInspect) {
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
  if (rules.size() >= UINT32_MAX) {
    return Unexpected(ErrorCode::kTooLarge, "more than 4294967294 rules");
  }
  return std::shared_ptr<const RuleTable>(new RuleTable(std::move(rules), default_action));
}

std::shared_ptr<const RuleTable> RuleTable::Empty(Action default_action) {
  TG_CHECK(default_action != Action::kInspect);
  return std::shared_ptr<const RuleTable>(new RuleTable({}, default_action));
}

void RuleTable::MarkUsed(std::string_view name) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    if (rules_[i].once && rules_[i].name == name) used_[i].store(true);
  }
}

void RuleTable::Candidates(FlowFacts& facts, std::vector<uint32_t>& out) const {
  out.clear();
  const FlowQuestion& q = facts.question();
  if (!by_network_.empty()) {
    const IpAddress& other = q.direction == Direction::kOutbound ? q.tuple.dst : q.tuple.src;
    for (const NetworkBucket& bucket : by_network_) {
      if (bucket.family != other.family) continue;
      const IpAddress key = IpNetwork{other, bucket.prefix_len}.Masked().address;
      if (auto it = bucket.rules.find(key); it != bucket.rules.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
      }
    }
  }
  if (!by_exact_host_.empty() || !by_host_suffix_.empty()) {
    for (const KnownName& known : facts.names()) {
      std::string_view name = known.name;
      if (auto it = by_exact_host_.find(name); it != by_exact_host_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
      }
      if (by_host_suffix_.empty()) continue;
      // Every proper suffix at a label boundary: a.b.example.com -> b.example.com, example.com,
      // com.
      for (size_t dot = name.find('.'); dot != std::string_view::npos;
           dot = name.find('.', dot + 1)) {
        if (auto it = by_host_suffix_.find(name.substr(dot + 1)); it != by_host_suffix_.end()) {
          out.insert(out.end(), it->second.begin(), it->second.end());
        }
      }
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

namespace {

bool GlobMatches(const std::vector<std::string>& globs, const std::string& value) {
  return std::any_of(globs.begin(), globs.end(), [&](const std::string& glob) {
    return fnmatch(glob.c_str(), value.c_str(), 0) == 0;
  });
}

}  // namespace

RuleTable::Tri RuleTable::Try(const Rule& rule, FlowFacts& facts, Trial& trial) const {
  const FlowQuestion& q = facts.question();
  if (rule.expires && facts.wall_now() >= *rule.expires) return Tri::kNo;
  if (!rule.MatchesTuple(q)) return Tri::kNo;
  bool unknown = false;
  auto undecided = [&](const char* what, bool inspect_helps) {
    unknown = true;
    if (trial.unknown == nullptr) trial.unknown = what;
    trial.inspect_would_help = trial.inspect_would_help || (inspect_helps && facts.inspectable());
  };
  // Cheap facts first; the process lookup last, and only if nothing else has said no.
  if (!rule.uids.empty() && q.uid != kUnknownId &&
      std::find(rule.uids.begin(), rule.uids.end(), q.uid) == rule.uids.end()) {
    return Tri::kNo;
  }
  if (rule.NeedsName()) {
    std::span<const KnownName> names = facts.names();
    if (names.empty()) {
      undecided("no name known", /*inspect_helps=*/true);
    } else {
      if (!rule.hosts.empty()) {
        for (const KnownName& known : names) {
          for (const HostPattern& pattern : rule.hosts) {
            if (pattern.Matches(known.name)) {
              trial.host = &pattern;
              trial.host_name = &known;
              break;
            }
          }
          if (trial.host != nullptr) break;
        }
        if (trial.host == nullptr) return Tri::kNo;
      }
      if (!rule.lists.empty()) {
        for (const KnownName& known : names) {
          for (const auto& list : rule.lists) {
            if (auto entry = list->Match(known.name)) {
              trial.list = list.get();
              trial.list_name = &known;
              trial.list_entry = *entry;
              break;
            }
          }
          if (trial.list != nullptr) break;
        }
        if (trial.list == nullptr) return Tri::kNo;
      }
    }
  }
  if (!rule.app_protocols.empty()) {
    const AppClassification* app = facts.app();
    if (app == nullptr) {
      undecided("no payload to classify", /*inspect_helps=*/true);
    } else if (app->protocol.empty() || EqualsIgnoringCase(app->protocol, "Unknown")) {
      undecided("protocol not recognised", false);
    } else if (app->guessed) {
      // A guess from the port (junk to 443 is "TLS") must not satisfy an allow rule, and a deny
      // on a guess is the operator's call: on_unknown says which.
      undecided("protocol only guessed", false);
    } else if (std::none_of(rule.app_protocols.begin(), rule.app_protocols.end(),
                            [&](const std::string& w) { return MatchesAppProtocol(*app, w); })) {
      return Tri::kNo;
    }
  }
  const bool uid_from_process = !rule.uids.empty() && q.uid == kUnknownId;
  if (!rule.exes.empty() || !rule.units.empty() || uid_from_process) {
    const ProcessLookup& lookup = facts.process();
    if (lookup.state != Attribution::kFound) {
      undecided(lookup.state == Attribution::kGone ? "process gone" : "process not found", false);
    } else {
      const ProcessInfo& p = lookup.process;
      if (!rule.exes.empty() && !GlobMatches(rule.exes, p.exe)) return Tri::kNo;
      if (!rule.units.empty() && !GlobMatches(rule.units, p.unit)) return Tri::kNo;
      if (uid_from_process &&
          std::find(rule.uids.begin(), rule.uids.end(), p.uid) == rule.uids.end()) {
        return Tri::kNo;
      }
    }
  }
  return unknown ? Tri::kUnknown : Tri::kYes;
}

namespace {

void AppendNamePart(std::string& out, const char* what, const std::string& shown,
                    const KnownName* known, bool show_name) {
  if (!out.empty()) out += ' ';
  out += what;
  out += shown;
  out += " via ";
  out += NameSourceName(known->source);
  if (show_name) {
    out += ": ";
    out += known->name;
  }
}

}  // namespace

Decision RuleTable::Decide(FlowFacts& facts, bool dry_run) const {
  thread_local std::vector<uint32_t> hits;
  Candidates(facts, hits);
  const bool no_names = has_name_rules_ && facts.names().empty();
  const std::vector<uint32_t>& base = no_names ? unindexed_and_named_ : unindexed_;

  Decision decision;
  decision.verdict.id = facts.question().id;
  decision.verdict.cache = CacheScope::kFlow;
  // Walks base and hits together in ascending order (= evaluation order).
  size_t a = 0;
  size_t b = 0;
  uint32_t previous = UINT32_MAX;
  while (a < base.size() || b < hits.size()) {
    uint32_t index;
    if (b >= hits.size() || (a < base.size() && base[a] <= hits[b])) {
      index = base[a++];
    } else {
      index = hits[b++];
    }
    if (index == previous) continue;
    previous = index;
    const Rule& rule = rules_[index];
    if (rule.once && used_[index].load(std::memory_order_relaxed)) continue;
    Trial trial;
    Tri result = Try(rule, facts, trial);
    if (result == Tri::kNo) continue;
    Action action = rule.action;
    if (result == Tri::kUnknown) {
      if (trial.inspect_would_help) {
        decision.rule = &rule;
        decision.verdict.action = Action::kInspect;
        decision.verdict.inspect_bytes = facts.inspect_bytes();
        decision.verdict.reason =
            std::string("inspect: rule \"") + rule.name + "\" (" + descriptions_[index] +
            ") needs " +
            (rule.NeedsName() && facts.names().empty() ? "the host name" : "the protocol");
        return decision;
      }
      if (!rule.on_unknown) continue;
      action = *rule.on_unknown;
    }
    // A `once` rule is used by exactly one flow, even when several threads decide at once.
    if (rule.once && !dry_run && used_[index].exchange(true)) continue;
    decision.rule = &rule;
    decision.verdict.action = action;
    std::string& reason = decision.verdict.reason;
    reason = std::string(ActionName(action)) + ": rule \"" + rule.name + "\" (";
    if (result == Tri::kUnknown) {
      reason += descriptions_[index] + ": " + trial.unknown + ", on_unknown)";
      return decision;
    }
    if (!rule.NeedsName()) {
      reason += descriptions_[index] + ")";
      return decision;
    }
    std::string parts = tuple_descriptions_[index];
    if (trial.host != nullptr) {
      AppendNamePart(parts, "host ", trial.host->text, trial.host_name,
                     trial.host->kind != HostPattern::Kind::kExact);
    }
    if (trial.list != nullptr) {
      AppendNamePart(parts, "list ", trial.list->name(), trial.list_name, true);
      if (trial.list_entry != trial.list_name->name) {
        parts += " (listed: ";
        parts += trial.list_entry;
        parts += ')';
      }
    }
    reason += parts + ")";
    return decision;
  }
  decision.verdict.action = default_action_;
  decision.verdict.reason = kDefaultReason;
  return decision;
}

const Rule* RuleTable::Match(const FlowQuestion& question) const {
  QuestionFacts facts(question);
  return Decide(facts).rule;
}

Verdict RuleTable::Decide(const FlowQuestion& question) const {
  QuestionFacts facts(question);
  return Decide(facts).verdict;
}

// --- loading ---

Expected<std::vector<Rule>> ParseRuleFile(std::string_view text, const std::string& source_name,
                                          const RuleLoadContext& context) {
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
    RuleReader reader(source_name, context, problems);
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
                                                         Action default_action,
                                                         const RuleLoadContext& context) {
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
    auto file_rules = ParseRuleFile(*text, path, context);
    if (!file_rules) return Unexpected(file_rules.error());
    std::move(file_rules->begin(), file_rules->end(), std::back_inserter(rules));
  }
  return RuleTable::Build(std::move(rules), default_action);
}

}  // namespace tollgate::analysis
