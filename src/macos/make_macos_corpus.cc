// Writes the seed corpora of the macOS fuzz targets from the test fixtures:
//   make_macos_corpus FUZZ_CORPUS_DIR   (e.g. fuzz/corpus)
// fills FUZZ_CORPUS_DIR/macho_signature/ and FUZZ_CORPUS_DIR/provisioning_profile/. Run by hand
// when the fixtures change; the files are checked in so ctest can replay them.
#include <cstdio>
#include <string>

#include "macos/test_fixtures.h"

int main(int argc, char** argv) {
  using namespace tollgate::macos::testing;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_macos_corpus FUZZ_CORPUS_DIR\n");
    return 2;
  }
  std::string root = argv[1];
  const std::string ents =
      "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>com.apple.security."
      "application-groups</key><array><string>ABCDE12345.com.example</string></array></dict>"
      "</plist>";
  MachOSpec arm;
  arm.entitlements_xml = ents;
  arm.team_id = "ABCDE12345";
  MachOSpec x86 = arm;
  x86.cpu_type = kCpuX86_64;
  MachOSpec ppc = arm;
  ppc.is64 = false;
  ppc.big_endian = true;
  ppc.cpu_type = 18;
  MachOSpec unsigned_ = arm;
  unsigned_.signed_ = false;
  std::string m = root + "/macho_signature/";
  WriteFile(m + "thin_arm64", BuildThinMachO(arm));
  WriteFile(m + "thin_ppc_big_endian", BuildThinMachO(ppc));
  WriteFile(m + "thin_unsigned", BuildThinMachO(unsigned_));
  WriteFile(m + "fat", BuildFatMachO({arm, x86}));
  WriteFile(m + "fat64", BuildFatMachO({x86, arm}, true));

  TestSigner signer = MakeTestSigner("Tollgate Corpus Signer");
  ProfileSpec spec;
  spec.team_id = "ABCDE12345";
  spec.app_id = "ABCDE12345.*";
  spec.app_groups = {"ABCDE12345.*"};
  spec.expiration_unix = 2000000000;
  std::string p = root + "/provisioning_profile/";
  WriteFile(p + "developer_id", BuildSignedProfile(spec, signer));
  spec.developer_id = false;
  WriteFile(p + "development", BuildSignedProfile(spec, signer));
  std::vector<uint8_t> bin = BuildProfilePlist(spec).ToBinary();
  WriteFile(p + "binary_plist_payload", SignCms(bin, signer));
  return 0;
}
