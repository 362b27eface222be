// Turns one parsed varlink Call into a Reply: answers org.varlink.service (GetInfo,
// GetInterfaceDescription) itself, checks the parameters of every io.tollgate.Control method
// (missing, unknown, wrong type: org.varlink.service.InvalidParameter; a value out of range or
// unparseable: io.tollgate.Control.InvalidParameter) and calls the ControlBackend. Subscribe is
// the ControlServer's own (it needs the connection), so it is only validated here.
// Pure: no I/O of its own, which is what lets the fuzz target drive it with raw bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "control/control_backend.h"
#include "control/varlink.h"

namespace tollgate::control {

inline constexpr char kSubscribeMethod[] = "io.tollgate.Control.Subscribe";

// The text of proto/io.tollgate.Control.varlink (compiled in; GetInterfaceDescription returns it).
std::string_view InterfaceDescription();

// Subscribe's parameters once checked.
struct SubscribeRequest {
  std::optional<std::string> action;  // only decisions with this action
};
// Checks a Subscribe call; the error reply when it is wrong (including a call without "more").
std::optional<SubscribeRequest> CheckSubscribe(const Call& call, Reply* error);

// Every method but Subscribe.
Reply Dispatch(const Call& call, ControlBackend& backend);

}  // namespace tollgate::control
