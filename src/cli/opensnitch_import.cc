#include "cli/opensnitch_import.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "analysis/rule_table.h"
#include "cli/cli_text.h"
#include "common/flow.h"

namespace tollgate::cli::opensnitch {
namespace {

using nlohmann::json;

constexpr size_t kMaxConditions = 64;
constexpr size_t kMaxValues = 1024;

// A TOML basic string. JSON strings from nlohmann are valid UTF-8, so only quotes, backslashes
// and control characters need escaping.
std::string TomlString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    unsigned char b = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (b < 0x20 || b == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\u%04x", b);
      out += esc;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// For messages: the value as the file had it, bounded and safe to print.
std::string Shown(std::string_view text) {
  std::string s = Printable(text);
  if (s.size() > 120) s = s.substr(0, 117) + "...";
  return "\"" + s + "\"";
}

// A condition key of a Tollgate rule, collected from one or more OpenSnitch operators.
struct Values {
  bool set = false;
  std::vector<std::string> items;  // TOML values, already rendered (strings quoted)
};

struct Draft {
  std::string source;
  std::string original_name;
  std::string action;
  bool precedence = false;
  Values protocol, port, ip, cidr, host, uid, exe;
  std::set<int> families;  // 4 and/or 6 from the protocol ("tcp" is IPv4 in OpenSnitch)
  bool once = false;
  std::optional<int64_t> expires;
  std::vector<std::string> notes;
  std::vector<Unconverted> problems;

  void Problem(std::string what, std::string why, std::string hint = "") {
    problems.push_back({source, original_name, std::move(what), std::move(why), std::move(hint)});
  }
};

// AND of two conditions on the same key: only values in both. Empty means the rule never
// matches, which is reported rather than emitted as a rule that looks like it does something.
void Merge(Draft& d, Values& key, std::vector<std::string> values, const std::string& what) {
  if (values.size() > kMaxValues) {
    d.Problem(what, "more than " + std::to_string(kMaxValues) + " values");
    return;
  }
  std::vector<std::string> unique;
  for (auto& v : values) {
    if (std::find(unique.begin(), unique.end(), v) == unique.end()) unique.push_back(v);
  }
  if (!key.set) {
    key.set = true;
    key.items = std::move(unique);
    return;
  }
  std::vector<std::string> both;
  for (auto& v : unique) {
    if (std::find(key.items.begin(), key.items.end(), v) != key.items.end()) both.push_back(v);
  }
  if (both.empty()) {
    d.Problem(what,
              "it contradicts another condition on the same field of this rule, so the "
              "rule never matches in OpenSnitch either");
  }
  key.items = std::move(both);
}

// A string field; `missing` when absent or null. A field of another type reads as "<number>",
// "<array>", ... so the message about it says what was there (json::value() would throw).
std::string Text(const json& j, const char* key, const char* missing) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return missing;
  if (it->is_string()) return it->get<std::string>();
  return std::string("<") + it->type_name() + ">";
}

// Values of an operator as strings: "data" (a string, or a number some tools write).
std::optional<std::string> DataText(const json& op) {
  auto it = op.find("data");
  if (it == op.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_unsigned()) return std::to_string(it->get<uint64_t>());
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  return std::nullopt;
}

std::optional<uint64_t> Number(std::string_view text, uint64_t max) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n <= max ? std::optional<uint64_t>(n) : std::nullopt;
}

struct ProtocolInfo {
  const char* name;
  int family;
};
const std::map<std::string, ProtocolInfo> kProtocols = {
    {"tcp", {"tcp", 4}},       {"tcp6", {"tcp", 6}},  {"udp", {"udp", 4}},
    {"udp6", {"udp", 6}},      {"icmp", {"icmp", 4}}, {"icmp6", {"icmpv6", 6}},
    {"icmpv6", {"icmpv6", 6}},
};

// One operator that is not a "list": a field compared with one value (simple), a regexp, or a
// network.
void ConvertLeaf(const json& op, Draft& d) {
  std::string type = Text(op, "type", "");
  std::string operand = Text(op, "operand", "");
  std::optional<std::string> data = DataText(op);
  const std::string what = "operator " + Printable(operand) + " " + Printable(type) +
                           (data ? " " + Shown(*data) : std::string());
  if (operand == "true") return;  // matches everything: no condition
  if (type == "lists") {
    std::string hint;
    if (operand == "lists.domains") {
      hint =
          "tollgate reads a blocklist from one hosts-format file: concatenate the directory's "
          "files (cat " +
          (data ? Printable(*data) : std::string("DIR")) +
          "/* > /etc/tollgate/lists/NAME.hosts), add NAME = \"/etc/tollgate/lists/NAME.hosts\" "
          "to [blocklists] in tollgate.toml, and write this rule with list = \"NAME\"";
    }
    d.Problem(what,
              "OpenSnitch lists (" + Printable(operand) +
                  ") name a directory of list files, which a rule cannot refer to",
              hint);
    return;
  }
  if (!data) {
    d.Problem(what, "the operator has no \"data\" string");
    return;
  }
  if (type != "simple" && type != "regexp" && type != "network") {
    d.Problem(what, "unknown operator type " + Shown(type) +
                        "; known: simple, regexp, network, lists, list");
    return;
  }
  // The values to compare with, as literals; a regexp counts when it is a list of alternatives.
  std::vector<std::string> literals;
  bool is_regex = false;
  if (type == "regexp") {
    auto alternatives = LiteralAlternatives(*data, operand == "dest.ip");
    if (alternatives) {
      literals = std::move(*alternatives);
    } else {
      is_regex = true;
    }
  } else {
    literals.push_back(*data);
  }
  auto not_regex = [&](const char* key, const char* takes) {
    d.Problem(what,
              std::string("tollgate's `") + key + "` takes " + takes +
                  ", and this regular expression is not a list of literal alternatives "
                  "anchored with ^...$",
              std::string("write the rule by hand with `") + key + "` listing the values meant");
  };

  if (operand == "process.path") {
    if (is_regex) return not_regex("exe", "paths or shell globs");
    std::vector<std::string> out;
    for (const auto& v : literals) {
      if (v.empty() || v[0] != '/' || v.find_first_of("*?[\\") != std::string::npos) {
        return d.Problem(what, "the path " + Shown(v) +
                                   " is not absolute, or holds a glob character that tollgate's "
                                   "`exe` would read as a pattern");
      }
      out.push_back(TomlString(v));
    }
    Merge(d, d.exe, std::move(out), what);
  } else if (operand == "dest.host") {
    std::vector<std::string> out;
    if (is_regex) {
      // OpenSnitch searches for the expression anywhere in the name; tollgate's /regex/ must
      // match the whole name. An expression anchored at both ends (with no top-level `|`, whose
      // branches would each carry one anchor) means the same in both; otherwise `.*(?:...).*`
      // turns the search into a whole-name match.
      std::string re = *data;
      // Whether a `|` is at depth 0 (outside any group or class).
      int depth = 0;
      bool in_class = false, top_bar = false;
      for (size_t i = 0; i < re.size(); ++i) {
        char c = re[i];
        if (c == '\\') {
          ++i;
        } else if (in_class) {
          if (c == ']') in_class = false;
        } else if (c == '[') {
          in_class = true;
        } else if (c == '(') {
          ++depth;
        } else if (c == ')') {
          --depth;
        } else if (c == '|' && depth == 0) {
          top_bar = true;
        }
      }
      bool anchored = re.size() >= 2 && re.front() == '^' && re.back() == '$' &&
                      re[re.size() - 2] != '\\' && !top_bar;
      std::string pattern = "/" + (anchored ? re : ".*(?:" + re + ").*") + "/";
      std::string error;
      if (!analysis::HostPattern::Parse(pattern, &error)) {
        return d.Problem(what, "not a regular expression tollgate (RE2) accepts: " + error,
                         "rewrite it in RE2 syntax (https://github.com/google/re2/wiki/Syntax)");
      }
      out.push_back(TomlString(pattern));
    } else {
      for (std::string v : literals) {
        std::transform(v.begin(), v.end(), v.begin(),
                       [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
        if (!v.empty() && v.back() == '.') v.pop_back();
        std::string error;
        if (v.empty() || v[0] == '*' || v[0] == '/' || !analysis::HostPattern::Parse(v, &error)) {
          return d.Problem(what, "the host " + Shown(v) + " is not a plain DNS name" +
                                     (error.empty() ? "" : ": " + error));
        }
        out.push_back(TomlString(v));
      }
    }
    if (d.host.set) {
      return d.Problem(what,
                       "a second condition on dest.host in one rule (both must hold); "
                       "tollgate's `host` is one condition");
    }
    Merge(d, d.host, std::move(out), what);
  } else if (operand == "dest.ip") {
    if (is_regex) return not_regex("ip", "addresses");
    std::vector<std::string> out;
    for (const auto& v : literals) {
      auto ip = IpAddress::Parse(v);
      if (!ip) return d.Problem(what, Shown(v) + " is not an IPv4 or IPv6 address");
      out.push_back(TomlString(ip->ToString()));
    }
    Merge(d, d.ip, std::move(out), what);
  } else if (operand == "dest.network") {
    if (is_regex) return not_regex("cidr", "networks");
    std::vector<std::string> out;
    for (const auto& v : literals) {
      auto net = analysis::IpNetwork::Parse(v);
      if (!net) return d.Problem(what, Shown(v) + " is not a network like 10.0.0.0/8");
      auto masked = net->Masked();
      if (!(masked == *net)) {
        // OpenSnitch (Go's net.ParseCIDR) uses the masked network; tollgate refuses host bits so
        // a typo is seen. Converting to the network OpenSnitch actually matched keeps the meaning.
        d.notes.push_back("network " + Printable(v) + " has host bits set; OpenSnitch matched " +
                          masked.ToString() + ", which is what the rule says now");
      }
      out.push_back(TomlString(masked.ToString()));
    }
    Merge(d, d.cidr, std::move(out), what);
  } else if (operand == "dest.port") {
    if (is_regex) return not_regex("port", "port numbers");
    std::vector<std::string> out;
    for (const auto& v : literals) {
      auto n = Number(v, 65535);
      if (!n) return d.Problem(what, Shown(v) + " is not a port number from 0 to 65535");
      out.push_back(std::to_string(*n));
    }
    Merge(d, d.port, std::move(out), what);
  } else if (operand == "protocol") {
    if (is_regex) return not_regex("protocol", "protocol names");
    std::vector<std::string> out;
    std::set<int> families;
    for (const auto& v : literals) {
      std::string lower = v;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
      auto it = kProtocols.find(lower);
      if (it == kProtocols.end()) {
        return d.Problem(what, "tollgate rules know tcp, udp, icmp and icmpv6, not " + Shown(v));
      }
      out.push_back(TomlString(it->second.name));
      families.insert(it->second.family);
    }
    if (d.protocol.set) {
      return d.Problem(what, "a second condition on protocol in one rule (both must hold)");
    }
    d.families = families;
    Merge(d, d.protocol, std::move(out), what);
  } else if (operand == "user.id") {
    if (is_regex) return not_regex("uid", "user ids");
    std::vector<std::string> out;
    for (const auto& v : literals) {
      auto n = Number(v, 0xfffffffeu);
      if (!n) return d.Problem(what, Shown(v) + " is not a numeric user id");
      out.push_back(std::to_string(*n));
    }
    Merge(d, d.uid, std::move(out), what);
  } else {
    d.Problem(what, "tollgate rules have no condition on " + Shown(operand) +
                        " (they have exe, host, ip, cidr, port, protocol, uid, user, unit)");
  }
}

void ConvertOperator(const json& op, Draft& d, int depth, size_t* conditions) {
  if (!op.is_object()) return d.Problem("operator", "it is not a JSON object");
  if (++*conditions > kMaxConditions) {
    if (*conditions == kMaxConditions + 1) {
      d.Problem("operator", "more than " + std::to_string(kMaxConditions) + " conditions");
    }
    return;
  }
  if (Text(op, "type", "") == "list") {
    auto list = op.find("list");
    if (list == op.end() || !list->is_array() || list->empty()) {
      return d.Problem("operator list", "a \"list\" operator without a non-empty \"list\" array");
    }
    if (depth >= kMaxOperatorDepth) {
      return d.Problem("operator list",
                       "lists nested deeper than " + std::to_string(kMaxOperatorDepth) + " levels");
    }
    // Every operator of a list must hold (AND), as every condition of a tollgate rule must.
    for (const json& item : *list) ConvertOperator(item, d, depth + 1, conditions);
    return;
  }
  ConvertLeaf(op, d);
}

// Remote-address conditions: ip AND cidr AND the protocol's address family must all hold; tollgate
// has one remote condition per rule, so fold them into one.
void FoldRemote(Draft& d) {
  if (d.ip.set && d.cidr.set) {
    std::vector<std::string> kept;
    for (const auto& quoted : d.ip.items) {
      auto ip = IpAddress::Parse(quoted.substr(1, quoted.size() - 2));
      for (const auto& qnet : d.cidr.items) {
        auto net = analysis::IpNetwork::Parse(qnet.substr(1, qnet.size() - 2));
        if (ip && net && net->Contains(*ip)) {
          kept.push_back(quoted);
          break;
        }
      }
    }
    if (kept.empty()) {
      return d.Problem("operators dest.ip and dest.network",
                       "no address of dest.ip is in dest.network, so the rule never matches in "
                       "OpenSnitch either");
    }
    d.ip.items = kept;
    d.cidr = {};
  }
  if (d.families.size() != 1) return;
  const int family = *d.families.begin();
  bool only_icmp = std::all_of(d.protocol.items.begin(), d.protocol.items.end(),
                               [](const std::string& p) { return p.find("icmp") != p.npos; });
  Values& remote = d.ip.set ? d.ip : d.cidr;
  if (remote.set) {
    std::vector<std::string> kept;
    for (const auto& quoted : remote.items) {
      auto net = analysis::IpNetwork::Parse(quoted.substr(1, quoted.size() - 2));
      if (net && net->address.family == family) kept.push_back(quoted);
    }
    if (kept.empty()) {
      return d.Problem("operator protocol", std::string("the protocol is IPv") +
                                                (family == 4 ? "4" : "6") +
                                                " only and no address of the rule is, so the "
                                                "rule never matches in OpenSnitch either");
    }
    remote.items = kept;
  } else if (!only_icmp) {
    // "tcp" in OpenSnitch is TCP over IPv4 ("tcp6" is over IPv6); tollgate's protocol is both, so
    // an all-addresses network of the family keeps the rule as narrow as it was.
    d.cidr.set = true;
    d.cidr.items = {TomlString(family == 4 ? "0.0.0.0/0" : "::/0")};
    d.notes.push_back(std::string("OpenSnitch's protocol names mean one address family; ") +
                      "cidr = \"" + (family == 4 ? "0.0.0.0/0" : "::/0") +
                      "\" keeps the rule to IPv" + (family == 4 ? "4" : "6"));
  }
}

void ConvertDuration(const json& rule, Draft& d, const ImportOptions& options) {
  std::string duration = Text(rule, "duration", "always");
  if (duration.empty() || duration == "always") return;
  if (duration == "once") {
    d.once = true;
    return;
  }
  if (duration == "until restart" || duration == "until reboot") {
    return d.Problem("duration " + Shown(duration),
                     "the rule lasts until OpenSnitch restarts; tollgate rules last until removed "
                     "(or until `expires`)",
                     "to keep it anyway, change its duration to \"always\" and import again");
  }
  auto seconds = ParseDurationSeconds(duration);
  if (!seconds) {
    return d.Problem("duration " + Shown(duration),
                     "not a duration tollgate knows (always, once, or like 30s, 5m, 1h, 12h)");
  }
  int64_t base = options.now_unix;
  std::optional<int64_t> created;
  if (auto it = rule.find("created"); it != rule.end() && it->is_string()) {
    created = ParseRfc3339(it->get<std::string>());
  }
  if (created) {
    base = *created;
  } else {
    d.notes.push_back("no \"created\" time: the " + Printable(duration) + " count from the import");
  }
  int64_t expires = base + *seconds;
  if (expires <= options.now_unix) {
    return d.Problem("duration " + Shown(duration), "the rule expired at " +
                                                        FormatRfc3339Utc(expires) + " (created " +
                                                        FormatRfc3339Utc(base) + ")");
  }
  d.expires = expires;
}

// Tollgate names: 1-64 of letters, digits, - _ . : (docs/rules.md).
std::string SanitiseName(const std::string& prefix, const std::string& original) {
  std::string name;
  for (char c : prefix + original) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    char out = ok ? c : '-';
    if (out == '-' && !name.empty() && name.back() == '-' && !ok) continue;
    name.push_back(out);
  }
  if (name.empty() || name == "-") name = "opensnitch-rule";
  if (name.size() > 60) name.resize(60);  // room for a "-NN" suffix
  return name;
}

std::string RenderValues(const char* key, const Values& v) {
  if (!v.set) return "";
  std::string out = std::string(key) + " = ";
  if (v.items.size() == 1) return out + v.items[0] + "\n";
  out += "[";
  for (size_t i = 0; i < v.items.size(); ++i) out += (i ? ", " : "") + v.items[i];
  return out + "]\n";
}

std::string RenderRule(const Draft& d, const std::string& name, int priority) {
  std::string t =
      "[[rule]]\nname = " + TomlString(name) + "\naction = " + TomlString(d.action) + "\n";
  if (priority != 0) t += "priority = " + std::to_string(priority) + "\n";
  t += RenderValues("protocol", d.protocol);
  t += RenderValues("port", d.port);
  t += RenderValues("ip", d.ip);
  t += RenderValues("cidr", d.cidr);
  t += RenderValues("host", d.host);
  t += RenderValues("uid", d.uid);
  t += RenderValues("exe", d.exe);
  if (d.once) t += "once = true\n";
  if (d.expires) t += "expires = " + FormatRfc3339Utc(*d.expires) + "\n";
  return t;
}

}  // namespace

std::optional<std::vector<std::string>> LiteralAlternatives(std::string_view regex,
                                                            bool dot_is_literal) {
  if (regex.size() < 3 || regex.front() != '^' || regex.back() != '$' ||
      regex[regex.size() - 2] == '\\') {
    return std::nullopt;
  }
  std::string_view inner = regex.substr(1, regex.size() - 2);
  // One optional group around everything: (a|b) or (?:a|b). Without it, alternatives are not
  // allowed: in "^a|b$" each anchor belongs to one branch only.
  bool grouped = false;
  if (inner.size() >= 2 && inner.front() == '(' && inner.back() == ')' &&
      inner[inner.size() - 2] != '\\') {
    inner = inner.substr(1, inner.size() - 2);
    if (inner.substr(0, 2) == "?:") inner.remove_prefix(2);
    grouped = true;
  }
  std::vector<std::string> out;
  std::string current;
  for (size_t i = 0; i < inner.size(); ++i) {
    char c = inner[i];
    if (c == '\\') {
      if (i + 1 >= inner.size()) return std::nullopt;
      char next = inner[++i];
      // \d, \w, \b... are classes, not characters.
      if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') ||
          (next >= '0' && next <= '9')) {
        return std::nullopt;
      }
      current.push_back(next);
    } else if (c == '|') {
      if (current.empty() || !grouped) return std::nullopt;
      out.push_back(std::move(current));
      current.clear();
    } else if (c == '.' && dot_is_literal) {
      current.push_back(c);
    } else if (std::string_view(".[]{}()*+?^$").find(c) != std::string_view::npos) {
      return std::nullopt;
    } else {
      current.push_back(c);
    }
  }
  if (current.empty()) return std::nullopt;
  out.push_back(std::move(current));
  return out;
}

ImportResult ImportOpenSnitchRules(const std::vector<SourceFile>& files,
                                   const ImportOptions& options) {
  ImportResult result;
  struct Candidate {
    std::string source;
    std::string name;
    json rule;
  };
  std::vector<Candidate> candidates;
  for (const SourceFile& file : files) {
    if (file.text.size() > kMaxRuleFileBytes) {
      result.unconverted.push_back({file.name, "", "the file",
                                    "larger than " + std::to_string(kMaxRuleFileBytes) +
                                        " bytes; an OpenSnitch rule file is a few hundred",
                                    ""});
      continue;
    }
    json doc = json::parse(file.text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
      result.unconverted.push_back(
          {file.name, "", "the file", "not JSON (an OpenSnitch rule file is one JSON object)", ""});
      continue;
    }
    std::vector<json> rules;
    if (doc.is_array()) {
      rules.assign(doc.begin(), doc.end());
    } else {
      rules.push_back(std::move(doc));
    }
    for (size_t i = 0; i < rules.size(); ++i) {
      ++result.rules_seen;
      json& rule = rules[i];
      auto name = rule.is_object() ? rule.find("name") : json::iterator{};
      if (!rule.is_object() || name == rule.end() || !name->is_string() ||
          name->get_ref<const std::string&>().empty()) {
        result.unconverted.push_back(
            {file.name, "", doc.is_array() ? "entry " + std::to_string(i) : "the file",
             "not an OpenSnitch rule: a JSON object with a non-empty \"name\"", ""});
        continue;
      }
      candidates.push_back({file.name, name->get<std::string>(), std::move(rule)});
    }
  }
  // OpenSnitch tries rules in alphabetical order of their names.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.name < b.name; });

  std::vector<Draft> drafts;
  for (Candidate& c : candidates) {
    Draft d;
    d.source = c.source;
    d.original_name = c.name;
    const json& rule = c.rule;
    if (auto it = rule.find("enabled"); it != rule.end() && it->is_boolean() && !it->get<bool>()) {
      d.Problem("the rule", "disabled in OpenSnitch (\"enabled\": false)",
                "enable it and import again to carry it over");
    }
    d.action = Text(rule, "action", "");
    if (d.action != "allow" && d.action != "deny" && d.action != "reject") {
      d.Problem("action " + Shown(d.action), "tollgate rules allow, deny or reject");
    }
    if (auto it = rule.find("precedence"); it != rule.end() && it->is_boolean()) {
      d.precedence = it->get<bool>();
    }
    if (d.problems.empty()) {
      ConvertDuration(rule, d, options);
      auto op = rule.find("operator");
      size_t conditions = 0;
      if (op == rule.end()) {
        d.Problem("the rule", "it has no \"operator\"");
      } else {
        ConvertOperator(*op, d, 0, &conditions);
      }
      if (d.problems.empty()) FoldRemote(d);
    }
    if (!d.problems.empty()) {
      for (auto& p : d.problems) result.unconverted.push_back(std::move(p));
      continue;
    }
    drafts.push_back(std::move(d));
  }

  // Priorities: see the header. Only a precedence allow needs them.
  bool precedence_allow = std::any_of(drafts.begin(), drafts.end(), [](const Draft& d) {
    return d.precedence && d.action == "allow";
  });
  auto decides_at_once = [](const Draft& d) { return d.precedence || d.action != "allow"; };
  int at_once_left = static_cast<int>(std::count_if(drafts.begin(), drafts.end(), decides_at_once));

  std::set<std::string> used;
  for (Draft& d : drafts) {
    int priority = 0;
    if (precedence_allow && decides_at_once(d)) priority = at_once_left--;
    std::string base = SanitiseName(options.name_prefix, d.original_name);
    std::string name = base;
    for (int n = 2; used.count(name) > 0; ++n) name = base + "-" + std::to_string(n);
    if (name != options.name_prefix + d.original_name) {
      d.notes.push_back("renamed from " + Shown(d.original_name) +
                        " (tollgate names are 1-64 letters, digits, - _ . : and unique)");
    }
    if (priority != 0) {
      d.notes.push_back("priority " + std::to_string(priority) +
                        " keeps OpenSnitch's order (a precedence allow rule is in this import)");
    }
    std::string toml = RenderRule(d, name, priority);
    // The self-check that makes the promise hold: what we emit loads in tollgate.
    auto loaded = analysis::ParseRuleFile(toml, "converted rule");
    if (!loaded) {
      result.unconverted.push_back({d.source, d.original_name, "the converted rule",
                                    "it does not load in tollgate: " + loaded.error().message, ""});
      continue;
    }
    used.insert(name);
    result.rules.push_back({d.source, d.original_name, name, std::move(toml), std::move(d.notes)});
  }
  return result;
}

std::string RenderRuleFile(const ImportResult& result) {
  std::string out =
      "# Converted from OpenSnitch rules by `tollgate rules import`: " +
      std::to_string(result.rules.size()) + " of " + std::to_string(result.rules_seen) +
      " rule(s).\n# Rules are in OpenSnitch's order (by name); see docs/cli.md for the mapping.\n";
  for (const ConvertedRule& r : result.rules) {
    out += "\n# from " + Printable(r.source) + ", OpenSnitch rule " + Shown(r.original_name) + "\n";
    for (const auto& note : r.notes) out += "# note: " + Printable(note) + "\n";
    out += r.toml;
  }
  if (!result.unconverted.empty()) {
    out += "\n# NOT CONVERTED (" + std::to_string(result.unconverted.size()) + "):\n";
    for (const Unconverted& u : result.unconverted) {
      out += "#   " + Printable(u.source) + (u.rule.empty() ? "" : " rule " + Shown(u.rule)) +
             ": " + Printable(u.what) + ": " + Printable(u.why) + "\n";
      if (!u.hint.empty()) out += "#     hint: " + Printable(u.hint) + "\n";
    }
  }
  return out;
}

}  // namespace tollgate::cli::opensnitch
