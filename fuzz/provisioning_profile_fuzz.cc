// Fuzzes the provisioning-profile reader: OpenSSL's CMS decoding, the plist payload and the field
// extraction. Any byte string must be refused with a message or give a profile; the plist parser
// is also fed the raw input, since the payload of a real profile is attacker-chosen too.
#include <cstddef>
#include <cstdint>
#include <span>

#include "macos/plist.h"
#include "macos/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tollgate::macos;
  auto profile = ReadProvisioningProfile(std::span(data, size), "fuzz");
  if (!profile) {
    if (profile.error().message.empty()) __builtin_trap();
  } else {
    (void)profile->ApplicationIdentifier();
    (void)profile->ApplicationGroups();
    if (profile->signature != SignatureCheck::kNotChecked) __builtin_trap();
  }
  auto plist = ParsePlist(std::span(data, size), "fuzz");
  if (plist) {
    PlistRef root = plist->Ref();
    for (const std::string& key : root.Keys()) (void)root[key].Strings();
    (void)plist->ToXml();
    (void)plist->ToBinary();
  }
  return 0;
}
