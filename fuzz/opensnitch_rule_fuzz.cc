// Fuzzes the OpenSnitch rule importer (`tollgate rules import`): its input is JSON written by
// another program or by hand. Every byte string must give a result, never a crash, and keep the
// importer's promise: every rule it emits loads in tollgate (all of them together, too), and no
// rule disappears without a line in `unconverted`.
#include <cstddef>
#include <cstdint>
#include <string>

#include "analysis/rule_table.h"
#include "cli/opensnitch_import.h"
#include "common/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tollgate::cli::opensnitch;
  std::string text(reinterpret_cast<const char*>(data), size);
  ImportResult result =
      ImportOpenSnitchRules({{"fuzz.json", text}}, {/*now_unix=*/1714564800, "os-"});
  TG_CHECK(result.rules.size() <= result.rules_seen);
  if (result.complete()) TG_CHECK(result.rules.size() == result.rules_seen);
  for (const ConvertedRule& rule : result.rules) {
    TG_CHECK(tollgate::analysis::ParseRuleFile(rule.toml, "fuzz.toml").has_value());
  }
  TG_CHECK(tollgate::analysis::ParseRuleFile(RenderRuleFile(result), "all.toml").has_value());
  return 0;
}
