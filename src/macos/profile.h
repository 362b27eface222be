// Reads an Apple provisioning profile (embedded.provisionprofile): a CMS SignedData message, DER
// encoded, whose content is an XML plist naming the team, the application identifier, the
// entitlements the profile authorises, the devices, and the expiry date. `tollgate macos check`
// calls it for the app's and the extension's profiles. The bytes are outside input: the CMS is
// decoded by OpenSSL and the payload by ParsePlist, both with size bounds. Signature checking is
// done only when the caller gives a trusted certificate (Apple's root, or a test's throwaway one);
// otherwise the payload is read unverified and the result says so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "macos/plist.h"

namespace tollgate::macos {

// Real profiles are 8-30 KiB (certificates included).
inline constexpr size_t kMaxProfileBytes = 1024 * 1024;

enum class SignatureCheck { kNotChecked, kValid, kInvalid };

struct ProvisioningProfile {
  std::string name;                          // "Name"
  std::vector<std::string> team_ids;         // "TeamIdentifier"
  std::vector<std::string> app_id_prefixes;  // "ApplicationIdentifierPrefix"
  std::optional<int64_t> expiration_unix;    // "ExpirationDate"
  bool provisions_all_devices = false;       // "ProvisionsAllDevices": Developer ID profiles
  size_t provisioned_devices = 0;            // "ProvisionedDevices": development profiles
  Plist entitlements;                        // "Entitlements" (a dictionary, or null)
  SignatureCheck signature = SignatureCheck::kNotChecked;
  std::string signature_error;  // why verification failed, when kInvalid

  // "com.apple.application-identifier" (macOS) or "application-identifier" (iOS style).
  std::optional<std::string> ApplicationIdentifier() const;
  // The profile's application groups, possibly with a trailing "*" wildcard.
  std::vector<std::string> ApplicationGroups() const;
};

// Decodes the CMS message and its plist. With `trusted_cert_pem`, also verifies the CMS signature
// against that certificate (as the only trust anchor) and records the result in `signature`; a
// bad signature is not an Error, so the check can report it as a finding. Errors: kTooLarge,
// kMalformed (not DER CMS, no content, payload not a plist/dictionary), kInvalidArgument (the
// certificate does not parse).
Expected<ProvisioningProfile> ReadProvisioningProfile(
    std::span<const uint8_t> der, std::string_view where,
    const std::optional<std::string>& trusted_cert_pem = std::nullopt);

// Only the CMS layer: the signed content bytes (the plist), for the fuzz target and tests.
Expected<std::vector<uint8_t>> ExtractProfileContent(std::span<const uint8_t> der,
                                                     std::string_view where);

}  // namespace tollgate::macos
