#include "macos/bundle.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>

#include "macos/macho.h"

namespace tollgate::macos {
namespace {

namespace fs = std::filesystem;

bool IsFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool IsDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// Entries of `dir` whose name ends with `suffix`, sorted so that reports are stable.
std::vector<fs::path> Listing(const fs::path& dir, std::string_view suffix, bool want_dirs) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!IsDir(dir)) return out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.size() <= suffix.size() || !name.ends_with(suffix)) continue;
    if (want_dirs ? IsDir(it->path()) : IsFile(it->path())) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class Loader {
 public:
  Loader(const LoadOptions& options, MacosTarget& target) : options_(options), target_(target) {}

  Plist LoadPlist(const fs::path& path) {
    auto bytes = ReadFileBounded(path.string(), kMaxPlistBytes);
    if (!bytes) return Unreadable(path, bytes.error());
    auto plist = ParsePlist(*bytes, path.string());
    if (!plist) return Unreadable(path, plist.error());
    if (plist->Ref().Type() != PLIST_DICT) {
      return Unreadable(path,
                        Error{ErrorCode::kMalformed, path.string() + ": the top level is not a "
                                                                     "dictionary"});
    }
    return std::move(*plist);
  }

  std::optional<ProvisioningProfile> LoadProfile(const fs::path& path) {
    if (!IsFile(path)) return std::nullopt;
    auto bytes = ReadFileBounded(path.string(), kMaxProfileBytes);
    if (!bytes) {
      Unreadable(path, bytes.error());
      return std::nullopt;
    }
    auto profile = ReadProvisioningProfile(*bytes, path.string(), options_.trusted_cert_pem);
    if (!profile) {
      Unreadable(path, profile.error());
      return std::nullopt;
    }
    return std::move(*profile);
  }

  // Entitlements and team ID from an executable's code signature. An unsigned executable, or
  // one signed without entitlements, has an empty entitlements dictionary: that is what macOS
  // sees, and the checks then say what is missing.
  void LoadExecutable(const fs::path& path, Plist* entitlements,
                      std::optional<std::string>* team_id) {
    auto bytes = ReadFileBounded(path.string(), kMaxExecutableBytes);
    if (!bytes) {
      Unreadable(path, bytes.error());
      return;
    }
    auto slices = ReadMachOSignatures(*bytes);
    if (!slices) {
      Unreadable(path, Error{slices.error().code, path.string() + ": " + slices.error().message});
      return;
    }
    const SliceSignature& first = slices->front();
    for (size_t i = 1; i < slices->size(); ++i) {
      if ((*slices)[i].entitlements_xml != first.entitlements_xml) {
        target_.load_findings.push_back(MakeFinding("slice-entitlements-differ", path.string(),
                                                    "the " + CpuTypeName((*slices)[i].cpu_type) +
                                                        " slice is signed with entitlements "
                                                        "different from the " +
                                                        CpuTypeName(first.cpu_type) + " slice"));
        break;
      }
    }
    *team_id = first.team_id;
    if (entitlements == nullptr) return;
    if (!first.entitlements_xml) {
      *entitlements = Plist::Dict();
      return;
    }
    auto plist = ParsePlist(*first.entitlements_xml, path.string() + " (embedded entitlements)");
    if (!plist) {
      Unreadable(path, plist.error());
      return;
    }
    if (plist->Ref().Type() != PLIST_DICT) {
      Unreadable(path, Error{ErrorCode::kMalformed,
                             path.string() + ": embedded entitlements are not a dictionary"});
      return;
    }
    *entitlements = std::move(*plist);
  }

  // A bundle component: Contents/Info.plist, Contents/MacOS/<CFBundleExecutable>,
  // Contents/embedded.provisionprofile.
  Component LoadBundleComponent(const std::string& name, const fs::path& bundle,
                                const std::optional<std::string>& profile_override) {
    Component c;
    c.name = name;
    fs::path contents = bundle / "Contents";
    c.info_path = (contents / "Info.plist").string();
    c.info = LoadPlist(c.info_path);
    auto exe = c.info["CFBundleExecutable"].String();
    c.entitlements_path = (contents / "MacOS" / exe.value_or("")).string();
    if (!c.info.IsNull()) {
      if (!exe || exe->empty() || exe->find('/') != std::string::npos) {
        Unreadable(c.info_path, Error{ErrorCode::kMalformed,
                                      c.info_path + ": CFBundleExecutable is missing or not a "
                                                    "plain file name"});
      } else if (!IsFile(c.entitlements_path)) {
        target_.load_findings.push_back(MakeFinding("component-missing", c.entitlements_path,
                                                    "the " + name +
                                                        "'s executable (CFBundleExecutable " +
                                                        *exe + ") is not in the bundle"));
      } else {
        LoadExecutable(c.entitlements_path, &c.entitlements, &c.code_team_id);
      }
    }
    SetProfile(c, contents / "embedded.provisionprofile", profile_override);
    return c;
  }

  // A source component: DIR/Info.plist, the one DIR/*.entitlements, DIR/embedded.provisionprofile.
  Component LoadSourceComponent(const std::string& name, const fs::path& dir,
                                const std::optional<std::string>& profile_override) {
    Component c;
    c.name = name;
    c.info_path = (dir / "Info.plist").string();
    if (IsFile(c.info_path)) {
      c.info = LoadPlist(c.info_path);
    } else {
      Missing(c.info_path, "the " + name + "'s Info.plist");
    }
    auto ents = Listing(dir, ".entitlements", false);
    if (ents.empty()) {
      c.entitlements_path = (dir / (name + ".entitlements")).string();
      Missing(c.entitlements_path, "the " + name + "'s entitlements file (*.entitlements)");
    } else {
      c.entitlements_path = ents.front().string();
      c.entitlements = LoadPlist(ents.front());
    }
    SetProfile(c, dir / "embedded.provisionprofile", profile_override);
    return c;
  }

  std::vector<LaunchJob> LoadJobs(const fs::path& dir, const fs::path* bundle_root) {
    std::vector<LaunchJob> jobs;
    for (const fs::path& p : Listing(dir, ".plist", false)) {
      LaunchJob job;
      job.path = p.string();
      job.plist = LoadPlist(p);
      if (job.plist.IsNull()) continue;
      auto program = job.plist["BundleProgram"].String();
      if (bundle_root != nullptr && program && !program->empty() && program->front() != '/' &&
          program->find("..") == std::string::npos) {
        fs::path exe = *bundle_root / *program;
        job.bundle_program_exists = IsFile(exe);
        if (*job.bundle_program_exists) LoadExecutable(exe, nullptr, &job.code_team_id);
      }
      jobs.push_back(std::move(job));
    }
    return jobs;
  }

  void Missing(const std::string& path, const std::string& what) {
    target_.load_findings.push_back(MakeFinding("component-missing", path, what + " is missing"));
  }

 private:
  void SetProfile(Component& c, const fs::path& embedded,
                  const std::optional<std::string>& override_path) {
    std::optional<std::string> chosen = override_path ? override_path : options_.profile_path;
    fs::path path = chosen ? fs::path(*chosen) : embedded;
    c.profile_path = path.string();
    if (chosen && !IsFile(path)) {
      Unreadable(path, Error{ErrorCode::kNotFound, path.string() + ": no such profile file"});
      return;
    }
    c.profile = LoadProfile(path);
  }

  Plist Unreadable(const fs::path& path, const Error& error) {
    target_.load_findings.push_back(MakeFinding("unreadable-file", path.string(), error.message));
    return Plist();
  }

  const LoadOptions& options_;
  MacosTarget& target_;
};

}  // namespace

Expected<std::vector<uint8_t>> ReadFileBounded(const std::string& path, size_t max_bytes) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return Unexpected(Error::System("open " + path, errno));
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  for (;;) {
    size_t n = std::fread(buf, 1, sizeof(buf), f.get());
    if (n == 0) break;
    if (out.size() + n > max_bytes) {
      return Unexpected(ErrorCode::kTooLarge, path + ": larger than the limit of " +
                                                  std::to_string(max_bytes) + " bytes");
    }
    out.insert(out.end(), buf, buf + n);
  }
  if (std::ferror(f.get())) return Unexpected(Error::System("read " + path, EIO));
  return out;
}

Expected<MacosTarget> LoadTarget(const std::string& path, const LoadOptions& options) {
  fs::path root(path);
  MacosTarget target;
  target.root = path;
  Loader loader(options, target);
  if (IsFile(root / "Contents" / "Info.plist")) {
    target.kind = MacosTarget::Kind::kBundle;
    target.app = loader.LoadBundleComponent("app", root, options.app_profile_path);
    fs::path library = root / "Contents" / "Library";
    auto extensions = Listing(library / "SystemExtensions", ".systemextension", true);
    if (extensions.empty()) {
      loader.Missing((library / "SystemExtensions").string(),
                     "the system extension (Contents/Library/SystemExtensions/*.systemextension)");
    } else {
      target.extension = loader.LoadBundleComponent("extension", extensions.front(),
                                                    options.extension_profile_path);
    }
    target.daemons = loader.LoadJobs(library / "LaunchDaemons", &root);
    target.agents = loader.LoadJobs(library / "LaunchAgents", &root);
    if (target.daemons.empty()) {
      loader.Missing((library / "LaunchDaemons").string(),
                     "the launch daemon's plist (Contents/Library/LaunchDaemons/*.plist)");
    }
    return target;
  }
  if (IsDir(root / "App") || IsDir(root / "Extension")) {
    target.kind = MacosTarget::Kind::kSources;
    target.app = loader.LoadSourceComponent("app", root / "App", options.app_profile_path);
    target.extension =
        loader.LoadSourceComponent("extension", root / "Extension", options.extension_profile_path);
    target.daemons = loader.LoadJobs(root / "LaunchDaemons", nullptr);
    target.agents = loader.LoadJobs(root / "LaunchAgents", nullptr);
    if (target.daemons.empty()) {
      loader.Missing((root / "LaunchDaemons").string(),
                     "the launch daemon's plist (LaunchDaemons/*.plist)");
    }
    return target;
  }
  if (!IsDir(root)) {
    return Unexpected(ErrorCode::kNotFound, path + ": no such directory or file");
  }
  return Unexpected(ErrorCode::kNotFound,
                    path +
                        ": neither an .app bundle (no Contents/Info.plist) nor a tree written by "
                        "`tollgate macos scaffold` (no App/ or Extension/); give the bundle, the "
                        "scaffold directory, or a single file");
}

Expected<FileReport> InspectFile(const std::string& path, const LoadOptions& load,
                                 const CheckOptions& check) {
  auto bytes = ReadFileBounded(path, kMaxExecutableBytes);
  if (!bytes) return Unexpected(bytes.error());
  FileReport report;
  if (LooksLikeMachO(*bytes)) {
    report.kind = "mach-o";
    auto slices = ReadMachOSignatures(*bytes);
    if (!slices) return Unexpected(slices.error().code, path + ": " + slices.error().message);
    for (const SliceSignature& s : *slices) {
      std::string arch = CpuTypeName(s.cpu_type);
      if (!s.has_signature) {
        report.facts.emplace_back(arch, "not signed");
        continue;
      }
      report.facts.emplace_back(arch + " identifier", s.identifier.value_or("(none)"));
      report.facts.emplace_back(arch + " team", s.team_id.value_or("(none)"));
      if (!s.entitlements_xml) {
        report.facts.emplace_back(arch + " entitlements", "(none)");
        continue;
      }
      auto ents = ParsePlist(*s.entitlements_xml, path + " (" + arch + " entitlements)");
      if (!ents) return Unexpected(ents.error());
      std::string keys;
      for (const std::string& k : ents->Ref().Keys()) keys += (keys.empty() ? "" : ", ") + k;
      report.facts.emplace_back(arch + " entitlements", keys.empty() ? "(empty)" : keys);
      if (s.entitlements_xml != slices->front().entitlements_xml) {
        report.findings.push_back(
            MakeFinding("slice-entitlements-differ", path,
                        "the " + arch + " slice is signed with entitlements different from the " +
                            CpuTypeName(slices->front().cpu_type) + " slice"));
      }
    }
    return report;
  }
  if (!bytes->empty() && (*bytes)[0] == 0x30) {  // DER SEQUENCE: a CMS message
    report.kind = "provisioning-profile";
    auto profile = ReadProvisioningProfile(*bytes, path, load.trusted_cert_pem);
    if (!profile) return Unexpected(profile.error());
    report.facts.emplace_back("name", profile->name);
    report.facts.emplace_back("team", profile->team_ids.empty() ? "(none)" : profile->team_ids[0]);
    report.facts.emplace_back("application identifier",
                              profile->ApplicationIdentifier().value_or("(none)"));
    std::string groups;
    for (const std::string& g : profile->ApplicationGroups()) {
      groups += (groups.empty() ? "" : ", ") + g;
    }
    report.facts.emplace_back("app groups", groups.empty() ? "(none)" : groups);
    report.facts.emplace_back(
        "distribution",
        profile->provisions_all_devices
            ? "developer-id (all devices)"
            : "development (" + std::to_string(profile->provisioned_devices) + " devices)");
    if (profile->expiration_unix) {
      char when[32];
      time_t t = static_cast<time_t>(*profile->expiration_unix);
      tm utc{};
      gmtime_r(&t, &utc);
      std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
      report.facts.emplace_back("expires", when);
    }
    report.facts.emplace_back("signature", profile->signature == SignatureCheck::kValid ? "valid"
                                           : profile->signature == SignatureCheck::kInvalid
                                               ? "INVALID"
                                               : "not checked (give --cert)");
    // Reuse the component checks that need nothing but the profile.
    Component c;
    c.name = "profile";
    c.profile_path = path;
    c.entitlements = Plist::Dict();
    c.profile = std::move(*profile);
    MacosTarget t;
    t.app = std::move(c);
    for (Finding& f : RunChecks(t, check)) {
      if (f.id == "profile-expired" || f.id == "profile-signature-invalid") {
        report.findings.push_back(std::move(f));
      }
    }
    return report;
  }
  auto plist = ParsePlist(*bytes, path);
  if (!plist) return Unexpected(plist.error());
  if (plist->Ref().Type() != PLIST_DICT) {
    return Unexpected(ErrorCode::kMalformed, path + ": the top level is not a dictionary");
  }
  if (!(*plist)["Label"].IsNull()) {
    report.kind = "launchd-plist";
    report.facts.emplace_back("label", (*plist)["Label"].String().value_or("(not a string)"));
    MacosTarget t;
    LaunchJob job;
    job.path = path;
    job.plist = std::move(*plist);
    t.daemons.push_back(std::move(job));
    report.findings = RunChecks(t, check);
    return report;
  }
  report.kind = "plist";
  std::string keys;
  for (const std::string& k : plist->Ref().Keys()) keys += (keys.empty() ? "" : ", ") + k;
  report.facts.emplace_back("keys", keys.empty() ? "(empty)" : keys);
  if (!(*plist)["NetworkExtension"].IsNull()) {
    MacosTarget t;
    Component c;
    c.name = "extension";
    c.info_path = path;
    c.info = std::move(*plist);
    t.extension = std::move(c);
    report.findings = RunChecks(t, check);
  }
  return report;
}

}  // namespace tollgate::macos
