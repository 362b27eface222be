// Writes the configuration of a Tollgate content filter for macOS that is consistent by
// construction: the container app's and the system extension's Info.plist and entitlements, the
// launch daemon's plist (on demand, registered with SMAppService), and a README explaining each
// key. `tollgate macos scaffold` calls it; the tests check that its output passes every check.
// The layout is the source tree `tollgate macos check` understands (bundle.h):
//   App/Info.plist, App/App.entitlements, Extension/Info.plist, Extension/Extension.entitlements,
//   LaunchDaemons/<bundle-id>.daemon.plist, README.md
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "macos/checks.h"

namespace tollgate::macos {

struct ScaffoldOptions {
  std::string team_id;                   // 10 characters, A-Z 0-9, from the developer portal
  std::string bundle_id;                 // the container app's, e.g. com.example.tollgate
  std::optional<std::string> app_group;  // default TEAMID.bundle_id
  std::string app_name = "Tollgate";
  Distribution distribution = Distribution::kDeveloperId;
};

// The names the scaffold derives from its options, shared with the tests and the README.
struct ScaffoldNames {
  std::string app_group;            // T.B
  std::string extension_bundle_id;  // B.filter
  std::string daemon_label;         // B.daemon
  std::string analysis_service;     // <group>.analysis, the daemon's Mach service
  std::string extension_service;    // <group>.filter, the extension's NEMachServiceName
  std::string daemon_program;       // Contents/MacOS/tollgated
};

struct ScaffoldFile {
  std::string relative_path;
  std::string contents;
};

// Validates the options (errors are kInvalidArgument and say which value and why).
Expected<ScaffoldNames> DeriveScaffoldNames(const ScaffoldOptions& options);

// The files, in memory.
Expected<std::vector<ScaffoldFile>> BuildScaffold(const ScaffoldOptions& options);

// Writes the files under `out_dir` (created if needed). Refuses to overwrite an existing file
// unless `overwrite`. Returns the paths written.
Expected<std::vector<std::string>> WriteScaffold(const std::vector<ScaffoldFile>& files,
                                                 const std::string& out_dir, bool overwrite);

}  // namespace tollgate::macos
