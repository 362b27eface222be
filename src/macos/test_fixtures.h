// Test-only builders for the macOS checks: Mach-O executables with an embedded code signature
// laid out as Apple documents it (thin and universal), provisioning profiles signed with CMS by a
// throwaway self-signed certificate made with OpenSSL, and a fake .app bundle assembled from the
// scaffold's files. Used by the unit tests and by make_macos_corpus (fuzz seeds).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "macos/plist.h"
#include "macos/scaffold.h"

namespace tollgate::macos::testing {

inline constexpr uint32_t kCpuX86_64 = 0x01000007;
inline constexpr uint32_t kCpuArm64 = 0x0100000c;

struct MachOSpec {
  uint32_t cpu_type = kCpuArm64;
  bool is64 = true;
  bool big_endian = false;  // headers in big-endian order (as on PowerPC)
  bool signed_ = true;      // with LC_CODE_SIGNATURE
  std::optional<std::string> entitlements_xml;
  std::string identifier = "com.example.tollgate";
  std::optional<std::string> team_id;
};

std::vector<uint8_t> BuildThinMachO(const MachOSpec& spec);
// A universal binary of the given thin slices; fat64 uses the 64-bit architecture table.
std::vector<uint8_t> BuildFatMachO(const std::vector<MachOSpec>& slices, bool fat64 = false);

// A self-signed certificate and its key, both PEM, valid for a year from now.
struct TestSigner {
  std::string cert_pem;
  std::string key_pem;
};
TestSigner MakeTestSigner(const std::string& common_name);

// DER CMS SignedData over `content`, with the content embedded (as Apple's profiles are).
std::vector<uint8_t> SignCms(const std::vector<uint8_t>& content, const TestSigner& signer);

struct ProfileSpec {
  std::string team_id;
  std::string app_id;  // TEAM.bundle or a wildcard TEAM.*
  std::vector<std::string> app_groups;
  std::vector<std::string> network_extension = {"content-filter-provider-systemextension"};
  int64_t expiration_unix = 0;
  bool developer_id = true;  // ProvisionsAllDevices; otherwise one ProvisionedDevices entry
  std::string name = "Tollgate Test Profile";
};
Plist BuildProfilePlist(const ProfileSpec& spec);
std::vector<uint8_t> BuildSignedProfile(const ProfileSpec& spec, const TestSigner& signer);

// Writes `bytes` to `path`, creating directories. Aborts the test binary on failure.
void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes);
void WriteFile(const std::string& path, const std::string& text);
std::string ReadText(const std::string& path);

// A .app bundle built from the scaffold's files: Info.plists in place, each executable a Mach-O
// signed (team `team_id`) with the scaffold's entitlements, the daemon's plist and executable,
// and `profile` embedded for both the app and the extension when given.
void WriteFakeBundle(const std::vector<ScaffoldFile>& scaffold, const std::string& app_dir,
                     const std::string& team_id,
                     const std::optional<std::vector<uint8_t>>& profile);

}  // namespace tollgate::macos::testing
