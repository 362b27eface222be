// Fuzzes the settings loader: every byte string is either refused with a positioned message or
// yields settings inside their documented ranges. Nothing may throw out of ParseConfig.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr char kSource[] = "fuzz.toml";
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = tollgate::ParseConfig(text, kSource);
  if (!config) {
    if (config.error().message.rfind(kSource, 0) != 0) __builtin_trap();
    return 0;
  }
  const auto& f = config->filter;
  const auto& d = config->daemon;
  const auto& t = config->tollgate;
  if (f.question_deadline_ms < tollgate::kMinQuestionDeadlineMs ||
      f.question_deadline_ms > tollgate::kMaxQuestionDeadlineMs || f.max_pending_flows == 0 ||
      f.max_pending_flows > tollgate::kMaxPendingFlowsLimit || f.queues.first > f.queues.last ||
      f.inspect_max_bytes == 0 || f.inspect_max_bytes > tollgate::kMaxInspectBytes ||
      d.idle_exit_seconds > tollgate::kMaxIdleExitSeconds ||
      d.default_action == tollgate::Action::kInspect || d.rules_dir.empty() ||
      d.rules_dir[0] != '/' || t.runtime_dir.empty() || t.runtime_dir[0] != '/' ||
      t.group.empty() || t.group.find('/') != std::string::npos) {
    __builtin_trap();
  }
  for (const auto& exe : d.allow_exe) {
    if (exe.sha256.size() != 64 || exe.path.empty() || exe.path[0] != '/') __builtin_trap();
  }
  return 0;
}
