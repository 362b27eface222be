// Converts OpenSnitch rule files (its JSON format, v1.5/1.6: name, enabled, precedence, action,
// duration, operator {type, operand, data, list}) to Tollgate [[rule]] tables, so people can move
// their rules over. `tollgate rules import` calls ImportOpenSnitchRules and prints the result or
// adds each rule through the control API; the fuzz target feeds it arbitrary files, which is
// what it gets: rule files from another program, possibly hand-edited.
//
// The one promise: nothing is dropped silently. A rule is either converted whole, with the same
// meaning, or listed in `unconverted` with what could not be carried over and why. A rule with
// one condition we cannot express is not converted at all, because leaving that condition out
// would make it match more than its author meant (an allow that lets more through, a deny that
// blocks more). docs/cli.md lists the mapping; the code below is the authority.
//
// Order: OpenSnitch tries rules by name, alphabetically; a matching deny or reject, or a rule
// marked "precedence", decides at once, while a matching allow only decides if nothing else
// matches. Tollgate's order (priority, then deny before allow, then file order) gives the same
// verdicts when the converted rules are emitted sorted by name at priority 0 — unless there is a
// precedence allow, which must beat a deny named after it: then every deciding-at-once rule gets a
// priority that keeps the alphabetical order, and the other allows stay at 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::cli::opensnitch {

// One rule file is a few hundred bytes; anything bigger is the wrong file.
inline constexpr size_t kMaxRuleFileBytes = 1 << 20;
// Nesting of "list" operators we follow; the GUI writes one level.
inline constexpr int kMaxOperatorDepth = 4;

struct SourceFile {
  std::string name;  // for messages: the path as given
  std::string text;  // the JSON: one rule object, or an array of them
};

struct ConvertedRule {
  std::string source;              // the file it came from
  std::string original_name;       // its OpenSnitch name
  std::string name;                // its Tollgate name (sanitised, prefixed, unique in the batch)
  std::string toml;                // one [[rule]] table, ending in '\n', no comments
  std::vector<std::string> notes;  // what changed on the way, for a person to look at
};

struct Unconverted {
  std::string source;
  std::string rule;  // the OpenSnitch rule name; empty when the file itself could not be read
  std::string what;  // `operator dest.host regexp "..."`, `duration "until restart"`, ...
  std::string why;
  std::string hint;  // what to do instead; may be empty
};

struct ImportOptions {
  int64_t now_unix = 0;     // for durations ("30m") of rules without a "created" time
  std::string name_prefix;  // prepended to every rule name, e.g. "opensnitch-"
};

struct ImportResult {
  std::vector<ConvertedRule> rules;  // sorted by OpenSnitch name, the order they must be loaded
  std::vector<Unconverted> unconverted;
  size_t rules_seen = 0;  // rule objects found in the files
  bool complete() const { return unconverted.empty(); }
};

ImportResult ImportOpenSnitchRules(const std::vector<SourceFile>& files,
                                   const ImportOptions& options);

// A rule file for rules.d/: a header, then each rule with a comment naming where it came from and
// its notes, then the unconverted items as comments (so a file written with `> x.toml` still
// says what is missing).
std::string RenderRuleFile(const ImportResult& result);

// OpenSnitch regular expressions that are only a list of literal alternatives, anchored at both
// ends ("^(53|80|443)$", "^/usr/bin/curl$"): the literals, unescaped. `dot_is_literal` lets an
// unescaped '.' count as itself (safe for IP addresses, whose text cannot differ from a literal
// only in a dot's position). nullopt for anything else.
std::optional<std::vector<std::string>> LiteralAlternatives(std::string_view regex,
                                                            bool dot_is_literal);

}  // namespace tollgate::cli::opensnitch
