// The configuration checks behind `tollgate macos check`: given what was read from a content
// filter's bundle (or from the source files `tollgate macos scaffold` writes), report every
// mistake that would otherwise surface only on a Mac after signing: app groups, Mach service
// names, NetworkExtension entitlements, provisioning profiles, team IDs, launchd on-demand keys.
// Pure functions over a MacosTarget (bundle.h fills it from disk), so tests build targets in
// memory or on disk alike. Each finding id is documented in docs/macos.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "macos/plist.h"
#include "macos/profile.h"

namespace tollgate::macos {

// Keys we read and write; named once so the scaffold and the checks cannot drift apart.
inline constexpr char kAppGroupsKey[] = "com.apple.security.application-groups";
inline constexpr char kAppSandboxKey[] = "com.apple.security.app-sandbox";
inline constexpr char kNetworkExtensionKey[] = "com.apple.developer.networking.networkextension";
inline constexpr char kSystemExtensionInstallKey[] = "com.apple.developer.system-extension.install";
inline constexpr char kAppIdentifierKey[] = "com.apple.application-identifier";
inline constexpr char kTeamIdentifierKey[] = "com.apple.developer.team-identifier";
inline constexpr char kContentFilterPlain[] = "content-filter-provider";
inline constexpr char kContentFilterSystemExtension[] = "content-filter-provider-systemextension";
inline constexpr char kFilterDataProviderClass[] = "com.apple.networkextension.filter-data";
// Our own Info.plist key: the Mach service of the analysis daemon the extension connects to.
inline constexpr char kAnalysisServiceKey[] = "TollgateAnalysisMachService";

// How the extension is signed; it decides which NetworkExtension entitlement value is valid.
enum class Distribution { kDeveloperId, kDevelopment };
const char* DistributionName(Distribution d);

struct Finding {
  std::string id;    // stable, kebab-case; see FindingCatalog()
  std::string file;  // the file that is wrong (or would be, when it is missing)
  std::string what;  // this instance: the values seen
  std::string why;   // why it matters on a Mac
  std::string fix;   // what to change
};

struct FindingKind {
  const char* id;
  const char* why;
  const char* fix;
};
// Every finding id the checks can produce, with its generic explanation.
const std::vector<FindingKind>& FindingCatalog();

// The app or the system extension: its Info.plist, the entitlements it is (or will be) signed
// with, what its code signature says, and its embedded provisioning profile.
struct Component {
  std::string name;  // "app" or "extension", for messages
  std::string info_path;
  Plist info;  // null when missing or unreadable (a finding was recorded)
  std::string entitlements_path;
  Plist entitlements;  // null when missing/unreadable; an empty dict when signed without any
  std::optional<std::string> code_team_id;  // CodeDirectory team ID (bundles only)
  std::string profile_path;                 // where the profile is or is expected
  std::optional<ProvisioningProfile> profile;
};

// A launchd job plist (LaunchDaemons/ or LaunchAgents/).
struct LaunchJob {
  std::string path;
  Plist plist;
  // Whether BundleProgram names a file in the bundle; nullopt for source trees, where the
  // executable does not exist yet.
  std::optional<bool> bundle_program_exists;
  std::optional<std::string> code_team_id;  // of the program, when it was read
};

struct MacosTarget {
  enum class Kind { kBundle, kSources };
  Kind kind = Kind::kBundle;
  std::string root;
  std::optional<Component> app;
  std::optional<Component> extension;
  std::vector<LaunchJob> daemons;
  std::vector<LaunchJob> agents;
  // Problems met while reading (unreadable-file, component-missing, slice-entitlements-differ).
  std::vector<Finding> load_findings;
};

struct CheckOptions {
  int64_t now_unix = 0;  // for profile expiry
  // Used when the extension has no profile to tell the signing identity from.
  std::optional<Distribution> distribution;
};

// All findings for the target, load findings first, in a stable order.
std::vector<Finding> RunChecks(const MacosTarget& target, const CheckOptions& options);

// Builds a finding from the catalog entry `id` (which must exist) with this instance's details.
Finding MakeFinding(std::string_view id, std::string file, std::string what, std::string fix = {});

// "T.B.analysis" is a child of "T.B"; so is anything under it, but not "T.Bx" or "T.B" itself.
bool IsChildOf(std::string_view name, std::string_view parent);
// Profile entitlement patterns: exact, or a prefix ending in "*" ("TEAM.*", "TEAM.com.x.*").
bool MatchesPattern(std::string_view value, std::string_view pattern);

}  // namespace tollgate::macos
