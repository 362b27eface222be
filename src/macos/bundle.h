// Reads what `tollgate macos check` looks at from disk into a MacosTarget (checks.h): a built .app
// bundle (Info.plists, entitlements from each executable's code signature, embedded profiles,
// launchd plists under Contents/Library), or the source tree `tollgate macos scaffold` writes
// (App/, Extension/, LaunchDaemons/, LaunchAgents/ with .entitlements files). A file that cannot
// be read or parsed becomes an unreadable-file finding, so one broken file does not hide the
// others; only an unusable PATH is an Error. Also inspects a single file (profile, Mach-O, plist).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "macos/checks.h"

namespace tollgate::macos {

// Whole executables are read into memory to reach their signature; real ones are far smaller.
inline constexpr size_t kMaxExecutableBytes = 256 * 1024 * 1024;

struct LoadOptions {
  // Profiles to use instead of the embedded ones (both, or each component).
  std::optional<std::string> profile_path;
  std::optional<std::string> app_profile_path;
  std::optional<std::string> extension_profile_path;
  // PEM certificate trusted to sign profiles (Apple's root CA, or a test certificate).
  std::optional<std::string> trusted_cert_pem;
};

// PATH is a bundle (has Contents/Info.plist) or a scaffold tree (has App/ or Extension/).
// Errors: kNotFound when PATH is neither.
Expected<MacosTarget> LoadTarget(const std::string& path, const LoadOptions& options);

// What one file is and what the checks that need only that file found.
struct FileReport {
  std::string kind;  // "provisioning-profile", "mach-o", "launchd-plist", "plist"
  std::vector<std::pair<std::string, std::string>> facts;  // label, value; for display
  std::vector<Finding> findings;
};

// Errors: kNotFound / kSystem when unreadable, kMalformed / kTooLarge when it does not parse.
Expected<FileReport> InspectFile(const std::string& path, const LoadOptions& load,
                                 const CheckOptions& check);

// Reads at most `max_bytes`; larger files are kTooLarge.
Expected<std::vector<uint8_t>> ReadFileBounded(const std::string& path, size_t max_bytes);

}  // namespace tollgate::macos
