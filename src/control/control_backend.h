// What the control API asks of tollgated. The dispatcher (dispatch.h) has checked every parameter's
// presence and type before calling; the backend checks meanings it alone knows (is the rule valid,
// is there a flow log) and answers with a varlink Reply: the method's output parameters, or an
// io.tollgate.Control error. tollgated implements it (src/daemon/daemon_backend.h); tests use a
// fake. Called on the daemon's event loop thread only.
#pragma once

#include <string>

#include "control/records.h"
#include "control/varlink.h"
#include "flowlog/flow_log.h"

namespace tollgate::control {

class ControlBackend {
 public:
  virtual ~ControlBackend() = default;
  virtual Reply GetStatus() = 0;
  virtual Reply ListRules() = 0;
  virtual Reply AddRule(const std::string& toml) = 0;
  virtual Reply RemoveRule(const std::string& name) = 0;
  virtual Reply Reload() = 0;
  virtual Reply TestFlow(const FlowSpec& flow) = 0;
  virtual Reply QueryFlows(const flowlog::FlowQuery& query) = 0;
  virtual Reply GetMetrics() = 0;
};

}  // namespace tollgate::control
