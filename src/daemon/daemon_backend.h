// tollgated's answers to the control API: the ControlBackend over the daemon's parts (settings,
// engine, channel server, flow log, rule files). main.cc builds it once the parts exist and hands
// it to the ControlServer. Runs on the daemon's event loop thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "analysis/engine.h"
#include "common/config.h"
#include "control/control_backend.h"
#include "control/control_server.h"
#include "control/managed_rules.h"
#include "flowlog/flow_log.h"
#include "ipc/channel_server.h"

namespace tollgate::daemon {

// What the last successful rule load put in force.
struct RuleSetState {
  uint64_t version = 0;  // +1 per successful load
  analysis::WallTime loaded_at{};
  std::map<std::string, size_t> blocklists;  // name -> entries
};

// Verdicts by action (allow, deny, reject, inspect), counted by the engine's observer.
using VerdictCounts = std::array<uint64_t, 4>;

struct DaemonParts {
  const Config* config = nullptr;
  analysis::WallTime started{};
  analysis::Engine* engine = nullptr;
  analysis::ProcessSource* processes = nullptr;  // for TestFlow's `name` path; may be null
  const ipc::ChannelServer* channel = nullptr;
  const control::ControlServer* control = nullptr;
  flowlog::FlowLog* flow_log = nullptr;  // null when off or unusable
  std::string flow_log_unavailable;      // why flow_log is null
  const RuleSetState* rule_set = nullptr;
  const VerdictCounts* verdicts = nullptr;
  // Reloads every rule file (the daemon's LoadRules); fails without changing the rules in force.
  std::function<Status()> reload;
  // What a rule may refer to now (blocklists, classifier).
  std::function<analysis::RuleLoadContext()> load_context;
};

class DaemonBackend final : public control::ControlBackend {
 public:
  explicit DaemonBackend(DaemonParts parts);

  control::Reply GetStatus() override;
  control::Reply ListRules() override;
  control::Reply AddRule(const std::string& toml) override;
  control::Reply RemoveRule(const std::string& name) override;
  control::Reply Reload() override;
  control::Reply TestFlow(const control::FlowSpec& flow) override;
  control::Reply QueryFlows(const flowlog::FlowQuery& query) override;
  control::Reply GetMetrics() override;

  // The parts wired after construction (the servers need the backend first).
  DaemonParts& parts() { return parts_; }

 private:
  nlohmann::json RuleJson(const analysis::RuleTable& table, size_t index,
                          const analysis::RuleLoadContext& context) const;

  DaemonParts parts_;
  control::ManagedRules managed_;
};

}  // namespace tollgate::daemon
