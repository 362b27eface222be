#include "macos/macho.h"

#include <gtest/gtest.h>

#include "macos/test_fixtures.h"

namespace tollgate::macos {
namespace {

using testing::BuildFatMachO;
using testing::BuildThinMachO;
using testing::MachOSpec;

const std::string kEntitlements =
    "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>com.apple.security.app-sandbox"
    "</key><true/></dict></plist>";

MachOSpec Signed(uint32_t cpu = testing::kCpuArm64) {
  MachOSpec s;
  s.cpu_type = cpu;
  s.entitlements_xml = kEntitlements;
  s.identifier = "com.example.tollgate.filter";
  s.team_id = "ABCDE12345";
  return s;
}

void PutBe32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

TEST(MachO, ThinSignedWithEntitlements) {
  auto bytes = BuildThinMachO(Signed());
  ASSERT_TRUE(LooksLikeMachO(bytes));
  auto slices = ReadMachOSignatures(bytes);
  ASSERT_TRUE(slices) << slices.error().message;
  ASSERT_EQ(slices->size(), 1u);
  const SliceSignature& s = slices->front();
  EXPECT_EQ(CpuTypeName(s.cpu_type), "arm64");
  EXPECT_TRUE(s.has_signature);
  EXPECT_EQ(s.entitlements_xml, kEntitlements);
  EXPECT_EQ(s.identifier, "com.example.tollgate.filter");
  EXPECT_EQ(s.team_id, "ABCDE12345");
}

TEST(MachO, Thin32BitBigEndian) {
  MachOSpec spec = Signed(18);
  spec.is64 = false;
  spec.big_endian = true;
  auto slices = ReadMachOSignatures(BuildThinMachO(spec));
  ASSERT_TRUE(slices) << slices.error().message;
  EXPECT_EQ(CpuTypeName(slices->front().cpu_type), "ppc");
  EXPECT_EQ(slices->front().entitlements_xml, kEntitlements);
}

TEST(MachO, UnsignedHasNoSignature) {
  MachOSpec spec;
  spec.signed_ = false;
  auto slices = ReadMachOSignatures(BuildThinMachO(spec));
  ASSERT_TRUE(slices) << slices.error().message;
  EXPECT_FALSE(slices->front().has_signature);
  EXPECT_FALSE(slices->front().entitlements_xml);
}

TEST(MachO, SignedWithoutEntitlementsOrTeam) {
  MachOSpec spec;
  auto slices = ReadMachOSignatures(BuildThinMachO(spec));
  ASSERT_TRUE(slices) << slices.error().message;
  EXPECT_TRUE(slices->front().has_signature);
  EXPECT_FALSE(slices->front().entitlements_xml);
  EXPECT_FALSE(slices->front().team_id);
  EXPECT_EQ(slices->front().identifier, "com.example.tollgate");
}

TEST(MachO, FatBinaryGivesEverySlice) {
  MachOSpec x86 = Signed(testing::kCpuX86_64);
  x86.entitlements_xml = "<plist><dict/></plist>";
  for (bool fat64 : {false, true}) {
    auto slices = ReadMachOSignatures(BuildFatMachO({Signed(), x86}, fat64));
    ASSERT_TRUE(slices) << slices.error().message;
    ASSERT_EQ(slices->size(), 2u);
    EXPECT_EQ(CpuTypeName((*slices)[0].cpu_type), "arm64");
    EXPECT_EQ(CpuTypeName((*slices)[1].cpu_type), "x86_64");
    EXPECT_EQ((*slices)[0].entitlements_xml, kEntitlements);
    EXPECT_EQ((*slices)[1].entitlements_xml, "<plist><dict/></plist>");
    EXPECT_GT((*slices)[1].offset, 0u);
  }
}

TEST(MachO, JavaClassFileIsRejectedClearly) {
  std::vector<uint8_t> java = {0xca, 0xfe, 0xba, 0xbe, 0x00, 0x00, 0x00, 0x37, 0, 0, 0, 0};
  auto r = ReadMachOSignatures(java);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("Java"), std::string::npos);
}

TEST(MachO, NotMachO) {
  std::vector<uint8_t> elf = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_FALSE(LooksLikeMachO(elf));
  EXPECT_FALSE(ReadMachOSignatures(elf));
}

// Every prefix of a valid file is either read or refused with a message; never a crash (ASan
// builds turn any over-read into a failure).
TEST(MachO, EveryTruncationIsHandled) {
  for (auto bytes : {BuildThinMachO(Signed()), BuildFatMachO({Signed(), Signed(7)})}) {
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto r = ReadMachOSignatures(std::span(bytes.data(), n));
      if (!r) {
        EXPECT_FALSE(r.error().message.empty()) << n;
      }
    }
  }
}

// Flipping any single byte of a valid file must not crash either.
TEST(MachO, EveryByteFlipIsHandled) {
  auto bytes = BuildFatMachO({Signed(), Signed(testing::kCpuX86_64)});
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t v : {uint8_t{0x00}, uint8_t{0xff}, uint8_t{0x80}}) {
      auto copy = bytes;
      copy[i] = v;
      auto r = ReadMachOSignatures(copy);
      if (!r) {
        EXPECT_FALSE(r.error().message.empty());
      }
    }
  }
}

// Structure-aware corruptions name what is wrong.
TEST(MachO, BadSignatureOffsetsAreNamed) {
  auto good = BuildThinMachO(Signed());
  // LC_CODE_SIGNATURE follows the 32-byte header and the 24-byte LC_UUID.
  size_t cmd = 32 + 24;
  auto bytes = good;
  bytes[cmd + 8] = 0xff;  // dataoff far past the end (little-endian)
  bytes[cmd + 11] = 0x7f;
  auto r = ReadMachOSignatures(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("LC_CODE_SIGNATURE points at"), std::string::npos);

  uint32_t sig = good[cmd + 8] | (good[cmd + 9] << 8);
  bytes = good;
  PutBe32(bytes, sig + 8, 100000);  // SuperBlob count
  r = ReadMachOSignatures(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("SuperBlob claims"), std::string::npos);

  bytes = good;
  PutBe32(bytes, sig, 0x12345678);
  r = ReadMachOSignatures(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not an embedded signature"), std::string::npos);

  bytes = good;
  // The first index entry (CodeDirectory) points outside the SuperBlob.
  PutBe32(bytes, sig + 12 + 4, 0x7fffffff);
  r = ReadMachOSignatures(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("outside the SuperBlob"), std::string::npos);
}

TEST(MachO, LoadCommandSizeZeroIsRefused) {
  auto bytes = BuildThinMachO(Signed());
  bytes[32 + 4] = 0;  // LC_UUID cmdsize = 0 would loop forever in a naive reader
  auto r = ReadMachOSignatures(bytes);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("has size 0"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::macos
