#include "macos/scaffold.h"

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace tollgate::macos {
namespace {

namespace fs = std::filesystem;

bool IsTeamId(const std::string& s) {
  if (s.size() != 10) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

// Reverse-DNS identifiers: letters, digits, '-' and '.', no empty component.
bool IsReverseDns(const std::string& s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != std::string::npos) {
    return false;
  }
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return s.find('.') != std::string::npos;
}

std::string Readme(const ScaffoldOptions& o, const ScaffoldNames& n) {
  const char* ne_value = o.distribution == Distribution::kDeveloperId
                             ? kContentFilterSystemExtension
                             : kContentFilterPlain;
  std::string r;
  r += "# " + o.app_name + " content filter: macOS configuration\n\n";
  r += "Written by `tollgate macos scaffold --team-id " + o.team_id + " --bundle-id " +
       o.bundle_id + "`. Check a build with `tollgate macos check " + o.app_name + ".app`.\n\n";
  r += "## Parts\n\n";
  r += "| File | Goes to | Part |\n|---|---|---|\n";
  r += "| App/Info.plist, App/App.entitlements | " + o.app_name +
       ".app/Contents | container app (" + o.bundle_id +
       "): installs the extension, registers the daemon |\n";
  r += "| Extension/Info.plist, Extension/Extension.entitlements | Contents/Library/"
       "SystemExtensions/" +
       n.extension_bundle_id + ".systemextension | NEFilterDataProvider (" + n.extension_bundle_id +
       "): sees every flow, asks the daemon |\n";
  r += "| LaunchDaemons/" + n.daemon_label +
       ".plist | Contents/Library/LaunchDaemons | analysis "
       "daemon (" +
       n.daemon_label + "): rules, names, verdicts |\n\n";
  r += "## Keys\n\n";
  r += "- `" + std::string(kAppGroupsKey) + "` = `" + n.app_group +
       "` in both entitlements. The extension is sandboxed and may look up only Mach services "
       "named under an app group it claims, so the daemon's service is `" +
       n.analysis_service + "`. The group must also be in both provisioning profiles.\n";
  r += "- `" + std::string(kNetworkExtensionKey) + "` = `" + ne_value + "` (" +
       DistributionName(o.distribution) +
       " signing; Developer ID needs the `-systemextension` values, development signing the "
       "plain ones).\n";
  r += "- `" + std::string(kAppSandboxKey) +
       "` = true for the extension: system extensions must be sandboxed.\n";
  r += "- `" + std::string(kSystemExtensionInstallKey) +
       "` = true for the app: it submits the OSSystemExtensionRequest.\n";
  r += "- `" + std::string(kAppIdentifierKey) + "` and `" + kTeamIdentifierKey +
       "`: the identity the profile authorises (`" + o.team_id + "." + o.bundle_id + "`, `" +
       o.team_id + "." + n.extension_bundle_id + "`).\n";
  r += "- Extension Info.plist `NetworkExtension/NEProviderClasses/" +
       std::string(kFilterDataProviderClass) +
       "`: the class NetworkExtension instantiates; `NEMachServiceName` = `" + n.extension_service +
       "`: the extension's own service (also under the group).\n";
  r += "- Extension Info.plist `" + std::string(kAnalysisServiceKey) + "` = `" +
       n.analysis_service +
       "`: Tollgate's key naming the daemon service the extension connects to; `tollgate macos "
       "check` matches it against the daemon's MachServices.\n";
  r += "- Daemon `Label` = `" + n.daemon_label + "`, `BundleProgram` = `" + n.daemon_program +
       "` (relative to the app bundle, as SMAppService requires), `MachServices` = `" +
       n.analysis_service + "`, `AssociatedBundleIdentifiers` = `" + o.bundle_id +
       "` (System Settings shows the daemon under the app).\n\n";
  r += "## Boot time and on demand\n\n";
  r += "The app registers the daemon with `SMAppService.daemon(plistName: \"" + n.daemon_label +
       ".plist\")`; the user approves it once in System Settings > Login Items. launchd then "
       "loads the job at every boot but does not start it: there is no `RunAtLoad` and no "
       "`KeepAlive`. The first time the extension connects to `" +
       n.analysis_service +
       "` launchd starts the daemon; the daemon exits when idle and the next connection starts "
       "it again. The extension itself is started by the system at boot once activated, before "
       "any user logs in, which is why its service provider must be a daemon and never a launch "
       "agent. While the daemon is away, the extension applies its fallback policy.\n";
  return r;
}

}  // namespace

Expected<ScaffoldNames> DeriveScaffoldNames(const ScaffoldOptions& o) {
  if (!IsTeamId(o.team_id)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "--team-id \"" + o.team_id +
                          "\" is not a team ID: 10 characters A-Z and 0-9, as shown under "
                          "Membership in the developer portal");
  }
  if (!IsReverseDns(o.bundle_id)) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "--bundle-id \"" + o.bundle_id +
                          "\" is not a reverse-DNS bundle identifier (letters, digits, '-', "
                          "'.'; e.g. com.example.tollgate)");
  }
  ScaffoldNames n;
  n.app_group = o.app_group.value_or(o.team_id + "." + o.bundle_id);
  if (!IsReverseDns(n.app_group) ||
      !(n.app_group.starts_with(o.team_id + ".") || n.app_group.starts_with("group."))) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "--app-group \"" + n.app_group + "\" must start with the team ID (" +
                          o.team_id + ".) or with \"group.\", followed by a reverse-DNS name");
  }
  if (o.app_name.empty() || o.app_name.find('/') != std::string::npos) {
    return Unexpected(ErrorCode::kInvalidArgument, "--name must be a plain, non-empty file name");
  }
  n.extension_bundle_id = o.bundle_id + ".filter";
  n.daemon_label = o.bundle_id + ".daemon";
  n.analysis_service = n.app_group + ".analysis";
  n.extension_service = n.app_group + ".filter";
  n.daemon_program = "Contents/MacOS/tollgated";
  return n;
}

Expected<std::vector<ScaffoldFile>> BuildScaffold(const ScaffoldOptions& o) {
  auto names = DeriveScaffoldNames(o);
  if (!names) return Unexpected(names.error());
  const ScaffoldNames& n = *names;
  const char* ne_value = o.distribution == Distribution::kDeveloperId
                             ? kContentFilterSystemExtension
                             : kContentFilterPlain;

  Plist app_info = Plist::Dict();
  app_info.Set("CFBundleIdentifier", Plist::Str(o.bundle_id));
  app_info.Set("CFBundleName", Plist::Str(o.app_name));
  app_info.Set("CFBundleExecutable", Plist::Str(o.app_name));
  app_info.Set("CFBundlePackageType", Plist::Str("APPL"));
  app_info.Set("CFBundleShortVersionString", Plist::Str(TOLLGATE_VERSION));
  app_info.Set("CFBundleVersion", Plist::Str("1"));
  app_info.Set("LSMinimumSystemVersion", Plist::Str("13.0"));  // SMAppService

  Plist app_ents = Plist::Dict();
  app_ents.Set(kAppIdentifierKey, Plist::Str(o.team_id + "." + o.bundle_id));
  app_ents.Set(kTeamIdentifierKey, Plist::Str(o.team_id));
  app_ents.Set(kAppGroupsKey, Plist::StringArray({n.app_group}));
  app_ents.Set(kNetworkExtensionKey, Plist::StringArray({ne_value}));
  app_ents.Set(kSystemExtensionInstallKey, Plist::Bool(true));

  Plist ext_info = Plist::Dict();
  ext_info.Set("CFBundleIdentifier", Plist::Str(n.extension_bundle_id));
  ext_info.Set("CFBundleName", Plist::Str(o.app_name + " Filter"));
  ext_info.Set("CFBundleExecutable", Plist::Str(n.extension_bundle_id));
  ext_info.Set("CFBundlePackageType", Plist::Str("SYSX"));
  ext_info.Set("CFBundleShortVersionString", Plist::Str(TOLLGATE_VERSION));
  ext_info.Set("CFBundleVersion", Plist::Str("1"));
  ext_info.Set("LSMinimumSystemVersion", Plist::Str("13.0"));
  ext_info.Set("NSSystemExtensionUsageDescription",
               Plist::Str(o.app_name + " filters network connections by the rules you set."));
  Plist provider_classes = Plist::Dict();
  provider_classes.Set(kFilterDataProviderClass, Plist::Str("TollgateFilter.FilterDataProvider"));
  Plist network_extension = Plist::Dict();
  network_extension.Set("NEMachServiceName", Plist::Str(n.extension_service));
  network_extension.Set("NEProviderClasses", std::move(provider_classes));
  ext_info.Set("NetworkExtension", std::move(network_extension));
  ext_info.Set(kAnalysisServiceKey, Plist::Str(n.analysis_service));

  Plist ext_ents = Plist::Dict();
  ext_ents.Set(kAppIdentifierKey, Plist::Str(o.team_id + "." + n.extension_bundle_id));
  ext_ents.Set(kTeamIdentifierKey, Plist::Str(o.team_id));
  ext_ents.Set(kAppSandboxKey, Plist::Bool(true));
  ext_ents.Set(kAppGroupsKey, Plist::StringArray({n.app_group}));
  ext_ents.Set(kNetworkExtensionKey, Plist::StringArray({ne_value}));

  Plist daemon = Plist::Dict();
  daemon.Set("Label", Plist::Str(n.daemon_label));
  daemon.Set("BundleProgram", Plist::Str(n.daemon_program));
  Plist services = Plist::Dict();
  services.Set(n.analysis_service, Plist::Bool(true));
  daemon.Set("MachServices", std::move(services));
  daemon.Set("AssociatedBundleIdentifiers", Plist::StringArray({o.bundle_id}));

  std::vector<ScaffoldFile> files;
  files.push_back({"App/Info.plist", app_info.ToXml()});
  files.push_back({"App/App.entitlements", app_ents.ToXml()});
  files.push_back({"Extension/Info.plist", ext_info.ToXml()});
  files.push_back({"Extension/Extension.entitlements", ext_ents.ToXml()});
  files.push_back({"LaunchDaemons/" + n.daemon_label + ".plist", daemon.ToXml()});
  files.push_back({"README.md", Readme(o, n)});
  return files;
}

Expected<std::vector<std::string>> WriteScaffold(const std::vector<ScaffoldFile>& files,
                                                 const std::string& out_dir, bool overwrite) {
  std::vector<std::string> written;
  if (!overwrite) {
    for (const ScaffoldFile& f : files) {
      std::error_code ec;
      fs::path p = fs::path(out_dir) / f.relative_path;
      if (fs::exists(p, ec)) {
        return Unexpected(ErrorCode::kInvalidArgument,
                          p.string() + " already exists; choose another --out or pass --force");
      }
    }
  }
  for (const ScaffoldFile& f : files) {
    fs::path p = fs::path(out_dir) / f.relative_path;
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) {
      return Unexpected(ErrorCode::kSystem,
                        "create directory " + p.parent_path().string() + ": " + ec.message());
    }
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << f.contents;
    out.close();
    if (!out) return Unexpected(Error::System("write " + p.string(), errno));
    written.push_back(p.string());
  }
  return written;
}

}  // namespace tollgate::macos
