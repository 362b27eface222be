// Fuzzes the rule file loader (rules.d/*.toml is root-written, but a loader that crashes on a bad
// file would take the daemon down on reload). Every byte string must either be refused with a
// positioned message or build a table whose order and verdicts keep the documented invariants.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "analysis/rule_table.h"

namespace {

using tollgate::Action;
using tollgate::FlowQuestion;
using tollgate::analysis::RuleTable;

constexpr char kSource[] = "fuzz.toml";

FlowQuestion Question(uint8_t protocol, const char* remote, uint16_t port,
                      tollgate::Direction direction) {
  FlowQuestion q;
  q.id = 7;
  q.direction = direction;
  q.tuple.protocol = protocol;
  q.tuple.dst = *tollgate::IpAddress::Parse(remote);
  q.tuple.src = q.tuple.dst;
  q.tuple.dst_port = port;
  return q;
}

bool Blocks(Action a) { return a == Action::kDeny || a == Action::kReject; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto rules = tollgate::analysis::ParseRuleFile(text, kSource);
  if (!rules) {
    // Every refusal names the file, so an operator can find what to fix.
    if (rules.error().message.rfind(kSource, 0) != 0) __builtin_trap();
    return 0;
  }
  auto table = RuleTable::Build(std::move(*rules), Action::kDeny);
  if (!table) return 0;  // only duplicates across files fail here; one file has none left
  const auto& ordered = (*table)->rules();
  for (size_t i = 1; i < ordered.size(); ++i) {
    const auto& a = ordered[i - 1];
    const auto& b = ordered[i];
    // Evaluation order: priority descending, blocks before allows at equal priority.
    if (a.priority < b.priority) __builtin_trap();
    if (a.priority == b.priority && !Blocks(a.action) && Blocks(b.action)) __builtin_trap();
  }
  const FlowQuestion questions[] = {
      Question(tollgate::ipproto::kTcp, "10.1.2.3", 443, tollgate::Direction::kOutbound),
      Question(tollgate::ipproto::kUdp, "2001:db8::1", 53, tollgate::Direction::kInbound),
      Question(tollgate::ipproto::kIcmp, "192.0.2.1", 0, tollgate::Direction::kOutbound),
  };
  for (const FlowQuestion& q : questions) {
    auto verdict = (*table)->Decide(q);
    if (verdict.id != q.id || verdict.reason.empty() || verdict.action == Action::kInspect) {
      __builtin_trap();
    }
  }
  return 0;
}
