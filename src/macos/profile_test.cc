#include "macos/profile.h"

#include <gtest/gtest.h>

#include "macos/test_fixtures.h"

namespace tollgate::macos {
namespace {

using testing::BuildSignedProfile;
using testing::ProfileSpec;
using testing::TestSigner;

const TestSigner& Signer() {
  static const TestSigner signer = testing::MakeTestSigner("Tollgate Test Profile Signer");
  return signer;
}

ProfileSpec Spec() {
  ProfileSpec spec;
  spec.team_id = "ABCDE12345";
  spec.app_id = "ABCDE12345.com.example.tollgate";
  spec.app_groups = {"ABCDE12345.com.example.tollgate"};
  spec.expiration_unix = 2000000000;
  return spec;
}

TEST(Profile, ReadsTheSignedPlist) {
  auto der = BuildSignedProfile(Spec(), Signer());
  auto p = ReadProvisioningProfile(der, "embedded.provisionprofile");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->name, "Tollgate Test Profile");
  EXPECT_EQ(p->team_ids, std::vector<std::string>{"ABCDE12345"});
  EXPECT_EQ(p->ApplicationIdentifier(), "ABCDE12345.com.example.tollgate");
  EXPECT_EQ(p->ApplicationGroups(), std::vector<std::string>{"ABCDE12345.com.example.tollgate"});
  EXPECT_EQ(p->expiration_unix, 2000000000);
  EXPECT_TRUE(p->provisions_all_devices);
  EXPECT_EQ(p->signature, SignatureCheck::kNotChecked);
}

TEST(Profile, DevelopmentProfileListsDevices) {
  ProfileSpec spec = Spec();
  spec.developer_id = false;
  auto p = ReadProvisioningProfile(BuildSignedProfile(spec, Signer()), "p");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_FALSE(p->provisions_all_devices);
  EXPECT_EQ(p->provisioned_devices, 1u);
}

TEST(Profile, VerifiesAgainstTheGivenCertificate) {
  auto der = BuildSignedProfile(Spec(), Signer());
  auto p = ReadProvisioningProfile(der, "p", Signer().cert_pem);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->signature, SignatureCheck::kValid) << p->signature_error;

  TestSigner other = testing::MakeTestSigner("Someone Else");
  auto q = ReadProvisioningProfile(der, "p", other.cert_pem);
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(q->signature, SignatureCheck::kInvalid);
  EXPECT_FALSE(q->signature_error.empty());
}

TEST(Profile, TamperedContentFailsVerification) {
  auto der = BuildSignedProfile(Spec(), Signer());
  // Change one character of the embedded plist ("Tollgate" in the Name).
  std::string needle = "Tollgate Test Profile";
  auto it = std::search(der.begin(), der.end(), needle.begin(), needle.end());
  ASSERT_NE(it, der.end());
  *it = 'X';
  auto p = ReadProvisioningProfile(der, "p", Signer().cert_pem);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->name, "Xollgate Test Profile");
  EXPECT_EQ(p->signature, SignatureCheck::kInvalid);
}

TEST(Profile, BadCertificateIsAnError) {
  auto der = BuildSignedProfile(Spec(), Signer());
  auto p = ReadProvisioningProfile(der, "p", std::string("not a certificate"));
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kInvalidArgument);
}

TEST(Profile, PlainPlistIsNotAProfile) {
  std::string xml = testing::BuildProfilePlist(Spec()).ToXml();
  auto p =
      ReadProvisioningProfile(std::span(reinterpret_cast<const uint8_t*>(xml.data()), xml.size()),
                              "/b/embedded.provisionprofile");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kMalformed);
  EXPECT_NE(p.error().message.find("/b/embedded.provisionprofile"), std::string::npos);
  EXPECT_NE(p.error().message.find("CMS"), std::string::npos);
}

TEST(Profile, SignedNonPlistIsAnError) {
  std::string text = "hello";
  auto der = testing::SignCms(std::vector<uint8_t>(text.begin(), text.end()), Signer());
  auto p = ReadProvisioningProfile(der, "p");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("signed content"), std::string::npos);
}

TEST(Profile, SignedArrayIsNotAProfile) {
  std::string xml = Plist::StringArray({"a"}).ToXml();
  auto der = testing::SignCms(std::vector<uint8_t>(xml.begin(), xml.end()), Signer());
  auto p = ReadProvisioningProfile(der, "p");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("not a dictionary"), std::string::npos);
}

TEST(Profile, TruncationsAreErrorsNotCrashes) {
  auto der = BuildSignedProfile(Spec(), Signer());
  for (size_t n = 0; n < der.size(); n += 3) {
    auto p = ReadProvisioningProfile(std::span(der.data(), n), "p");
    EXPECT_FALSE(p) << n;
    if (!p) {
      EXPECT_FALSE(p.error().message.empty());
    }
  }
}

TEST(Profile, OversizeIsRefused) {
  std::vector<uint8_t> big(kMaxProfileBytes + 1, 0x30);
  auto p = ReadProvisioningProfile(big, "p");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::kTooLarge);
}

TEST(Profile, ExtractContentGivesThePlistBytes) {
  std::string xml = testing::BuildProfilePlist(Spec()).ToXml();
  auto der = testing::SignCms(std::vector<uint8_t>(xml.begin(), xml.end()), Signer());
  auto content = ExtractProfileContent(der, "p");
  ASSERT_TRUE(content) << content.error().message;
  EXPECT_EQ(std::string(content->begin(), content->end()), xml);
}

}  // namespace
}  // namespace tollgate::macos
