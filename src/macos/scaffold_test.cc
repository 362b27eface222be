#include "macos/scaffold.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "macos/bundle.h"
#include "macos/test_fixtures.h"

namespace tollgate::macos {
namespace {

ScaffoldOptions Options() {
  ScaffoldOptions o;
  o.team_id = "ABCDE12345";
  o.bundle_id = "com.example.tollgate";
  return o;
}

const ScaffoldFile* Find(const std::vector<ScaffoldFile>& files, const std::string& path) {
  for (const ScaffoldFile& f : files) {
    if (f.relative_path == path) return &f;
  }
  return nullptr;
}

TEST(Scaffold, DerivedNamesShareOneGroup) {
  auto n = DeriveScaffoldNames(Options());
  ASSERT_TRUE(n) << n.error().message;
  EXPECT_EQ(n->app_group, "ABCDE12345.com.example.tollgate");
  EXPECT_EQ(n->analysis_service, "ABCDE12345.com.example.tollgate.analysis");
  EXPECT_EQ(n->extension_bundle_id, "com.example.tollgate.filter");
  EXPECT_EQ(n->daemon_label, "com.example.tollgate.daemon");
  EXPECT_TRUE(IsChildOf(n->analysis_service, n->app_group));
}

TEST(Scaffold, CustomGroup) {
  ScaffoldOptions o = Options();
  o.app_group = "group.com.example.shared";
  auto files = BuildScaffold(o);
  ASSERT_TRUE(files) << files.error().message;
  auto daemon =
      ParsePlist(Find(*files, "LaunchDaemons/com.example.tollgate.daemon.plist")->contents, "d");
  ASSERT_TRUE(daemon);
  EXPECT_EQ((*daemon)["MachServices"].Keys(),
            std::vector<std::string>{"group.com.example.shared.analysis"});
}

TEST(Scaffold, RejectsBadValues) {
  ScaffoldOptions o = Options();
  o.team_id = "abc";
  auto r = BuildScaffold(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("--team-id"), std::string::npos);
  o = Options();
  o.bundle_id = "no spaces allowed";
  EXPECT_FALSE(BuildScaffold(o));
  o = Options();
  o.bundle_id = "com..example";
  EXPECT_FALSE(BuildScaffold(o));
  o = Options();
  o.app_group = "ZZZZZ99999.com.example";  // another team's prefix
  r = BuildScaffold(o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("--app-group"), std::string::npos);
}

TEST(Scaffold, DaemonIsOnDemandAndAssociated) {
  auto files = BuildScaffold(Options());
  ASSERT_TRUE(files);
  auto d =
      ParsePlist(Find(*files, "LaunchDaemons/com.example.tollgate.daemon.plist")->contents, "d");
  ASSERT_TRUE(d);
  EXPECT_TRUE((*d)["RunAtLoad"].IsNull());
  EXPECT_TRUE((*d)["KeepAlive"].IsNull());
  EXPECT_EQ((*d)["BundleProgram"].String(), "Contents/MacOS/tollgated");
  EXPECT_EQ((*d)["AssociatedBundleIdentifiers"].Strings(),
            std::vector<std::string>{"com.example.tollgate"});
}

TEST(Scaffold, DistributionPicksTheEntitlementVariant) {
  for (auto [dist, value] : {std::pair{Distribution::kDeveloperId, kContentFilterSystemExtension},
                             std::pair{Distribution::kDevelopment, kContentFilterPlain}}) {
    ScaffoldOptions o = Options();
    o.distribution = dist;
    auto files = BuildScaffold(o);
    ASSERT_TRUE(files);
    auto e = ParsePlist(Find(*files, "Extension/Extension.entitlements")->contents, "e");
    ASSERT_TRUE(e);
    EXPECT_EQ((*e)[kNetworkExtensionKey].Strings(), std::vector<std::string>{value});
  }
}

TEST(Scaffold, ReadmeExplainsTheKeysAndOnDemandStart) {
  auto files = BuildScaffold(Options());
  ASSERT_TRUE(files);
  const std::string& readme = Find(*files, "README.md")->contents;
  for (const char* needle :
       {kAppGroupsKey, kNetworkExtensionKey, kAppSandboxKey, "MachServices", "RunAtLoad",
        "BundleProgram", "AssociatedBundleIdentifiers", "SMAppService", "on demand"}) {
    EXPECT_NE(readme.find(needle), std::string::npos) << needle;
  }
}

TEST(Scaffold, WriteRefusesToOverwrite) {
  char tmpl[] = "/tmp/tollgate-scaffold-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  auto files = BuildScaffold(Options());
  ASSERT_TRUE(files);
  auto first = WriteScaffold(*files, dir + "/out", false);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(first->size(), files->size());
  auto second = WriteScaffold(*files, dir + "/out", false);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("--force"), std::string::npos);
  EXPECT_TRUE(WriteScaffold(*files, dir + "/out", true));
  std::filesystem::remove_all(dir);
}

TEST(InspectFile, ProfileLaunchdPlistAndMachO) {
  char tmpl[] = "/tmp/tollgate-inspect-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  CheckOptions check;
  check.now_unix = 1900000000;
  LoadOptions load;

  testing::ProfileSpec spec;
  spec.team_id = "ABCDE12345";
  spec.app_id = "ABCDE12345.*";
  spec.expiration_unix = 1800000000;  // before `now`
  testing::WriteFile(dir + "/p.provisionprofile",
                     testing::BuildSignedProfile(spec, testing::MakeTestSigner("t")));
  auto r = InspectFile(dir + "/p.provisionprofile", load, check);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kind, "provisioning-profile");
  ASSERT_EQ(r->findings.size(), 1u);
  EXPECT_EQ(r->findings[0].id, "profile-expired");

  Plist job = Plist::Dict();
  job.Set("Label", Plist::Str("x"));
  job.Set("RunAtLoad", Plist::Bool(true));
  job.Set("BundleProgram", Plist::Str("Contents/MacOS/x"));
  Plist services = Plist::Dict();
  services.Set("T.x.analysis", Plist::Bool(true));
  job.Set("MachServices", std::move(services));
  testing::WriteFile(dir + "/job.plist", job.ToBinary());
  r = InspectFile(dir + "/job.plist", load, check);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kind, "launchd-plist");
  ASSERT_EQ(r->findings.size(), 1u);
  EXPECT_EQ(r->findings[0].id, "daemon-not-on-demand");

  testing::MachOSpec exe;
  exe.team_id = "ABCDE12345";
  exe.entitlements_xml = "<plist><dict><key>a</key><true/></dict></plist>";
  testing::WriteFile(dir + "/exe", testing::BuildFatMachO({exe}));
  r = InspectFile(dir + "/exe", load, check);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kind, "mach-o");
  EXPECT_TRUE(r->findings.empty());

  testing::WriteFile(dir + "/broken", std::string("\xca\xfe\xba\xbe\0\0\0\2", 8));
  r = InspectFile(dir + "/broken", load, check);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(dir + "/broken"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tollgate::macos
