// Every finding, produced by exactly one mutation of a scaffolded configuration: as a source tree
// (what `scaffold` writes) or as a fake .app bundle (Mach-O executables with embedded
// entitlements, embedded CMS-signed profiles). The unmutated configuration must be clean.
#include "macos/checks.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <ctime>
#include <filesystem>
#include <functional>
#include <set>

#include "macos/bundle.h"
#include "macos/scaffold.h"
#include "macos/test_fixtures.h"

namespace tollgate::macos {
namespace {

namespace fs = std::filesystem;
using testing::ProfileSpec;
using testing::WriteFile;

constexpr char kTeam[] = "ABCDE12345";
constexpr char kBundle[] = "com.example.tollgate";
constexpr char kGroup[] = "ABCDE12345.com.example.tollgate";

const testing::TestSigner& Signer() {
  static const testing::TestSigner signer = testing::MakeTestSigner("Tollgate Test Signer");
  return signer;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

std::multiset<std::string> Ids(const std::vector<Finding>& findings) {
  std::multiset<std::string> ids;
  for (const Finding& f : findings) ids.insert(f.id);
  return ids;
}

std::set<std::string> IdSet(const std::vector<Finding>& findings) {
  std::set<std::string> ids;
  for (const Finding& f : findings) ids.insert(f.id);
  return ids;
}

std::string Describe(const std::vector<Finding>& findings) {
  std::string out;
  for (const Finding& f : findings) out += "\n  " + f.id + " " + f.file + ": " + f.what;
  return out;
}

ProfileSpec ProfileFor(const std::string& bundle_id) {
  ProfileSpec spec;
  spec.team_id = kTeam;
  spec.app_id = std::string(kTeam) + "." + bundle_id;
  spec.app_groups = {kGroup};
  spec.expiration_unix = Now() + 365 * 86400;
  return spec;
}

class MacosChecks : public ::testing::Test {
 public:
  void SetUp() override {
    char tmpl[] = "/tmp/tollgate-macos-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    src_ = dir_ + "/src";
    app_ = dir_ + "/Tollgate.app";
    options_.team_id = kTeam;
    options_.bundle_id = kBundle;
    auto files = BuildScaffold(options_);
    ASSERT_TRUE(files) << files.error().message;
    files_ = *files;
    ASSERT_TRUE(WriteScaffold(files_, src_, false));
    WriteFile(src_ + "/App/embedded.provisionprofile", Profile(ProfileFor(kBundle)));
    WriteFile(src_ + "/Extension/embedded.provisionprofile",
              Profile(ProfileFor(std::string(kBundle) + ".filter")));
    ProfileSpec wildcard = ProfileFor("*");
    testing::WriteFakeBundle(files_, app_, kTeam, Profile(wildcard));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<uint8_t> Profile(const ProfileSpec& spec) {
    return testing::BuildSignedProfile(spec, Signer());
  }

  std::vector<Finding> Check(const std::string& path) {
    auto target = LoadTarget(path, load_);
    EXPECT_TRUE(target) << target.error().message;
    if (!target) return {};
    CheckOptions options;
    options.now_unix = Now();
    return RunChecks(*target, options);
  }

  // Reads, edits and writes back a plist (as XML, or binary when `binary`).
  void EditPlist(const std::string& path, const std::function<void(Plist&)>& edit,
                 bool binary = false) {
    auto p = ParsePlist(testing::ReadText(path), path);
    ASSERT_TRUE(p) << p.error().message;
    edit(*p);
    if (binary) {
      WriteFile(path, p->ToBinary());
    } else {
      WriteFile(path, p->ToXml());
    }
  }

  std::string DaemonPlist(const std::string& root) const {
    return root + "/LaunchDaemons/" + kBundle + ".daemon.plist";
  }

  std::string ExtensionContents() const {
    return app_ + "/Contents/Library/SystemExtensions/" + kBundle + ".filter.systemextension/" +
           "Contents";
  }

  std::string dir_, src_, app_;
  ScaffoldOptions options_;
  std::vector<ScaffoldFile> files_;
  LoadOptions load_;
};

TEST_F(MacosChecks, ScaffoldWithMatchingProfilesIsClean) {
  auto findings = Check(src_);
  EXPECT_TRUE(findings.empty()) << Describe(findings);
}

TEST_F(MacosChecks, ScaffoldWithoutProfilesReportsProfileMissingOnly) {
  fs::remove(src_ + "/App/embedded.provisionprofile");
  fs::remove(src_ + "/Extension/embedded.provisionprofile");
  auto findings = Check(src_);
  EXPECT_EQ(Ids(findings), (std::multiset<std::string>{"profile-missing", "profile-missing"}))
      << Describe(findings);
}

TEST_F(MacosChecks, DevelopmentScaffoldWithDevelopmentProfileIsClean) {
  options_.distribution = Distribution::kDevelopment;
  std::string dev = dir_ + "/dev";
  auto files = BuildScaffold(options_);
  ASSERT_TRUE(files);
  ASSERT_TRUE(WriteScaffold(*files, dev, false));
  for (auto [sub, id] : {std::pair{"App", std::string(kBundle)},
                         std::pair{"Extension", std::string(kBundle) + ".filter"}}) {
    ProfileSpec spec = ProfileFor(id);
    spec.developer_id = false;
    spec.network_extension = {kContentFilterPlain};
    WriteFile(dev + "/" + sub + "/embedded.provisionprofile", Profile(spec));
  }
  auto findings = Check(dev);
  EXPECT_TRUE(findings.empty()) << Describe(findings);
  // The Developer ID scaffold's entitlements under a development profile: the wrong variant.
  fs::copy_file(src_ + "/Extension/Extension.entitlements",
                dev + "/Extension/Extension.entitlements", fs::copy_options::overwrite_existing);
  EXPECT_EQ(IdSet(Check(dev)),
            std::set<std::string>{"network-extension-entitlement-wrong-variant"});
}

TEST_F(MacosChecks, BinaryPlistsAreReadLikeXml) {
  EditPlist(
      src_ + "/Extension/Info.plist", [](Plist&) {}, true);
  EditPlist(
      src_ + "/Extension/Extension.entitlements", [](Plist&) {}, true);
  EditPlist(
      DaemonPlist(src_), [](Plist&) {}, true);
  auto findings = Check(src_);
  EXPECT_TRUE(findings.empty()) << Describe(findings);
}

TEST_F(MacosChecks, ProfileSignatureVerifiedWithTheRightCertificate) {
  load_.trusted_cert_pem = Signer().cert_pem;
  auto findings = Check(src_);
  EXPECT_TRUE(findings.empty()) << Describe(findings);
}

TEST_F(MacosChecks, FakeBundleIsClean) {
  auto findings = Check(app_);
  EXPECT_TRUE(findings.empty()) << Describe(findings);
}

TEST_F(MacosChecks, FakeBundleWithoutProfilesReportsProfileMissingOnly) {
  fs::remove(app_ + "/Contents/embedded.provisionprofile");
  fs::remove(ExtensionContents() + "/embedded.provisionprofile");
  auto findings = Check(app_);
  EXPECT_EQ(IdSet(findings), std::set<std::string>{"profile-missing"}) << Describe(findings);
}

TEST_F(MacosChecks, UnsignedExtensionHasNoEntitlements) {
  testing::MachOSpec unsigned_exe;
  unsigned_exe.signed_ = false;
  WriteFile(ExtensionContents() + "/MacOS/" + kBundle + ".filter",
            testing::BuildThinMachO(unsigned_exe));
  auto ids = IdSet(Check(app_));
  EXPECT_TRUE(ids.count("extension-not-sandboxed"));
  EXPECT_TRUE(ids.count("network-extension-entitlement-missing"));
  EXPECT_TRUE(ids.count("mach-service-not-in-app-group"));
}

TEST_F(MacosChecks, NotABundleIsAnError) {
  fs::create_directories(dir_ + "/empty");
  auto target = LoadTarget(dir_ + "/empty", load_);
  ASSERT_FALSE(target);
  EXPECT_EQ(target.error().code, ErrorCode::kNotFound);
  EXPECT_NE(target.error().message.find("Contents/Info.plist"), std::string::npos);
  EXPECT_FALSE(LoadTarget(dir_ + "/nothing-here", load_));
}

// One mutation per finding id; each must produce that id and nothing else.
struct Mutation {
  const char* id;
  const char* name;
  bool bundle;  // mutate the fake .app (else the scaffold source tree)
  std::function<void(MacosChecks&)> apply;
};

class MacosMutation : public MacosChecks, public ::testing::WithParamInterface<Mutation> {};

std::vector<Mutation> Mutations();

TEST_P(MacosMutation, ProducesExactlyItsFinding) {
  const Mutation& m = GetParam();
  m.apply(*this);
  auto findings = Check(m.bundle ? app_ : src_);
  EXPECT_EQ(IdSet(findings), std::set<std::string>{m.id}) << Describe(findings);
  for (const Finding& f : findings) {
    EXPECT_FALSE(f.file.empty());
    EXPECT_FALSE(f.what.empty());
    EXPECT_FALSE(f.why.empty());
    EXPECT_FALSE(f.fix.empty());
  }
}

TEST(MacosFindingCatalog, EveryIdHasAMutation) {
  std::set<std::string> covered;
  for (const Mutation& m : Mutations()) covered.insert(m.id);
  for (const FindingKind& k : FindingCatalog()) {
    EXPECT_TRUE(covered.count(k.id)) << k.id << " has no test that produces it";
    EXPECT_TRUE(std::string(k.why).size() > 20 && std::string(k.fix).size() > 20) << k.id;
  }
  EXPECT_EQ(covered.size(), FindingCatalog().size());
}

INSTANTIATE_TEST_SUITE_P(Findings, MacosMutation, ::testing::ValuesIn(Mutations()),
                         [](const ::testing::TestParamInfo<Mutation>& param_info) {
                           return std::string(param_info.param.name);
                         });

std::vector<Mutation> Mutations() {
  const std::string group = kGroup;
  const std::string filter_id = std::string(kBundle) + ".filter";
  auto ext_ents = [](MacosChecks& t) { return t.src_ + "/Extension/Extension.entitlements"; };
  auto ext_info = [](MacosChecks& t) { return t.src_ + "/Extension/Info.plist"; };
  return {
      {"unreadable-file", "UnreadableInfoPlist", false,
       [=](MacosChecks& t) { WriteFile(ext_info(t), std::string("<plist><dict><key>")); }},
      {"unreadable-file", "TruncatedExtensionExecutable", true,
       [=](MacosChecks& t) {
         std::string exe = t.ExtensionContents() + "/MacOS/" + filter_id;
         fs::resize_file(exe, 100);
       }},
      {"component-missing", "NoLaunchDaemon", false,
       [](MacosChecks& t) { fs::remove_all(t.src_ + "/LaunchDaemons"); }},
      {"component-missing", "NoSystemExtensionInBundle", true,
       [](MacosChecks& t) { fs::remove_all(t.app_ + "/Contents/Library/SystemExtensions"); }},
      {"slice-entitlements-differ", "FatAppSlicesDiffer", true,
       [](MacosChecks& t) {
         testing::MachOSpec arm;
         arm.team_id = kTeam;
         arm.entitlements_xml = testing::ReadText(t.src_ + "/App/App.entitlements");
         testing::MachOSpec x86 = arm;
         x86.cpu_type = testing::kCpuX86_64;
         x86.entitlements_xml = *arm.entitlements_xml + "\n";
         WriteFile(t.app_ + "/Contents/MacOS/Tollgate", testing::BuildFatMachO({arm, x86}));
       }},
      {"profile-missing", "NoExtensionProfile", false,
       [](MacosChecks& t) { fs::remove(t.src_ + "/Extension/embedded.provisionprofile"); }},
      {"profile-signature-invalid", "ProfileSignedBySomeoneElse", false,
       [](MacosChecks& t) {
         t.load_.trusted_cert_pem = testing::MakeTestSigner("Not Apple").cert_pem;
       }},
      {"profile-expired", "ExpiredExtensionProfile", false,
       [=](MacosChecks& t) {
         ProfileSpec spec = ProfileFor(filter_id);
         spec.expiration_unix = Now() - 86400;
         WriteFile(t.src_ + "/Extension/embedded.provisionprofile", t.Profile(spec));
       }},
      {"profile-app-id-mismatch", "ProfileForAnotherBundle", false,
       [](MacosChecks& t) {
         WriteFile(t.src_ + "/Extension/embedded.provisionprofile",
                   t.Profile(ProfileFor("com.example.other")));
       }},
      {"app-group-not-in-profile", "GroupNotInProfile", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_ents(t), [&](Plist& p) {
           p.Set(kAppGroupsKey, Plist::StringArray({group, group + ".extra"}));
         });
       }},
      {"mach-service-not-in-app-group", "ServiceOutsideGroup", false,
       [=](MacosChecks& t) {
         std::string other = std::string(kTeam) + ".com.example.other.analysis";
         t.EditPlist(t.DaemonPlist(t.src_), [&](Plist& p) {
           Plist services = Plist::Dict();
           services.Set(other, Plist::Bool(true));
           p.Set("MachServices", std::move(services));
         });
         t.EditPlist(ext_info(t), [&](Plist& p) { p.Set(kAnalysisServiceKey, Plist::Str(other)); });
       }},
      {"extension-not-sandboxed", "NoSandbox", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_ents(t), [](Plist& p) { p.Remove(kAppSandboxKey); });
       }},
      {"extension-not-sandboxed", "SandboxFalseInBundle", true,
       [=](MacosChecks& t) {
         auto ents = ParsePlist(testing::ReadText(ext_ents(t)), "e");
         ents->Set(kAppSandboxKey, Plist::Bool(false));
         testing::MachOSpec spec;
         spec.team_id = kTeam;
         spec.entitlements_xml = ents->ToXml();
         WriteFile(t.ExtensionContents() + "/MacOS/" + filter_id, testing::BuildThinMachO(spec));
       }},
      {"network-extension-entitlement-missing", "NoContentFilterValue", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_ents(t), [](Plist& p) {
           p.Set(kNetworkExtensionKey,
                 Plist::StringArray({"packet-tunnel-provider-systemextension"}));
         });
       }},
      {"network-extension-entitlement-wrong-variant", "PlainValueUnderDeveloperId", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_ents(t), [](Plist& p) {
           p.Set(kNetworkExtensionKey, Plist::StringArray({kContentFilterPlain}));
         });
       }},
      {"provider-classes-missing-filter-data", "NoFilterDataProvider", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_info(t), [](Plist& p) {
           Plist ne = Plist::Dict();
           Plist classes = Plist::Dict();
           classes.Set("com.apple.networkextension.filter-packet", Plist::Str("X.Packet"));
           ne.Set("NEProviderClasses", std::move(classes));
           p.Set("NetworkExtension", std::move(ne));
         });
       }},
      {"system-extension-install-missing", "AppCannotInstall", false,
       [](MacosChecks& t) {
         t.EditPlist(t.src_ + "/App/App.entitlements",
                     [](Plist& p) { p.Remove(kSystemExtensionInstallKey); });
       }},
      {"team-id-mismatch", "ExtensionEntitlementsOtherTeam", false,
       [=](MacosChecks& t) {
         t.EditPlist(ext_ents(t),
                     [](Plist& p) { p.Set(kTeamIdentifierKey, Plist::Str("ZZZZZ99999")); });
       }},
      {"team-id-mismatch", "DaemonSignedByOtherTeam", true,
       [](MacosChecks& t) {
         testing::MachOSpec spec;
         spec.team_id = "ZZZZZ99999";
         WriteFile(t.app_ + "/Contents/MacOS/tollgated", testing::BuildThinMachO(spec));
       }},
      {"daemon-not-on-demand", "RunAtLoad", false,
       [](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_),
                     [](Plist& p) { p.Set("RunAtLoad", Plist::Bool(true)); });
       }},
      {"daemon-not-on-demand", "KeepAlive", false,
       [](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_),
                     [](Plist& p) { p.Set("KeepAlive", Plist::Bool(true)); });
       }},
      {"daemon-mach-service-missing", "NoMachServices", false,
       [](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_), [](Plist& p) { p.Remove("MachServices"); });
       }},
      {"daemon-mach-service-missing", "ServiceTheExtensionDoesNotUse", false,
       [=](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_), [&](Plist& p) {
           Plist services = Plist::Dict();
           services.Set(group + ".other", Plist::Bool(true));
           p.Set("MachServices", std::move(services));
         });
       }},
      {"daemon-bundle-program-missing", "NoBundleProgram", false,
       [](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_), [](Plist& p) { p.Remove("BundleProgram"); });
       }},
      {"daemon-bundle-program-missing", "AbsoluteProgram", false,
       [](MacosChecks& t) {
         t.EditPlist(t.DaemonPlist(t.src_),
                     [](Plist& p) { p.Set("BundleProgram", Plist::Str("/usr/local/bin/d")); });
       }},
      {"daemon-bundle-program-missing", "ExecutableNotInBundle", true,
       [](MacosChecks& t) { fs::remove(t.app_ + "/Contents/MacOS/tollgated"); }},
      {"agent-offers-mach-service", "AgentOffersAnalysisService", false,
       [=](MacosChecks& t) {
         Plist agent = Plist::Dict();
         agent.Set("Label", Plist::Str(std::string(kBundle) + ".agent"));
         Plist services = Plist::Dict();
         services.Set(group + ".analysis", Plist::Bool(true));
         agent.Set("MachServices", std::move(services));
         WriteFile(t.src_ + "/LaunchAgents/agent.plist", agent.ToXml());
       }},
  };
}

}  // namespace
}  // namespace tollgate::macos
