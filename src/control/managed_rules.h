// The rule file the control API edits: <rules_dir>/90-tollgate-cli.toml. AddRule and RemoveRule
// (tollgate rules add|rm) change only this file, so the operator's own files are never rewritten
// by a program. Each change is checked before it is made (the new rule parsed alone, then the whole
// new file), written atomically (temporary file + rename in the same directory), and followed by a
// reload of the whole rule set; if that reload fails, the previous file is put back, so a refused
// change leaves both the disk and the rules in force as they were. Used by tollgated's backend.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/rule_table.h"
#include "common/error.h"

namespace tollgate::control {

inline constexpr char kManagedRuleFileName[] = "90-tollgate-cli.toml";

class ManagedRules {
 public:
  // `reload` loads every rule file and puts the result in force (tollgated's LoadRules); it fails
  // without changing the rules in force.
  ManagedRules(std::string rules_dir, std::function<Status()> reload);

  std::string path() const;

  // Adds one [[rule]] table. Errors: kInvalidArgument/kMalformed (the rule, `AddRule:line:col:`
  // or the reload's `file:line:col:` message), kSystem (the file could not be written).
  // Returns the new rule's name.
  Expected<std::string> Add(std::string_view toml, const analysis::RuleLoadContext& context);

  // Removes the rule `name` from the managed file. kNotFound when the file has no such rule.
  Status Remove(std::string_view name, const analysis::RuleLoadContext& context);

  // The rule `name` as written in the managed file, or nullopt.
  std::optional<std::string> TextOf(std::string_view name,
                                    const analysis::RuleLoadContext& context) const;

  // Whether `origin` ("file:line:col") points into the managed file.
  bool IsManaged(std::string_view origin) const;

 private:
  struct Block {
    std::string text;  // from its [[rule]] line to the next one
    std::string name;  // "" for the header before the first rule
  };
  // The file cut into the header and one block per [[rule]]; kNotFound when it does not exist.
  Expected<std::vector<Block>> ReadBlocks(const analysis::RuleLoadContext& context) const;
  Status WriteAtomically(const std::string& text) const;
  // Writes `text`, reloads, and puts `previous` back (or removes the file) when the reload fails.
  Status Replace(const std::string& text, const std::optional<std::string>& previous);

  std::string dir_;
  std::function<Status()> reload_;
};

}  // namespace tollgate::control
