#include "cli/macos_commands.h"

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/exit_codes.h"
#include "macos/bundle.h"
#include "macos/checks.h"
#include "macos/scaffold.h"

namespace tollgate::cli {
namespace {

using nlohmann::json;

const std::map<std::string, macos::Distribution> kDistributions = {
    {"developer-id", macos::Distribution::kDeveloperId},
    {"development", macos::Distribution::kDevelopment},
};

struct ScaffoldFlags {
  macos::ScaffoldOptions options;
  std::optional<std::string> app_group;
  std::string distribution = "developer-id";
  std::string out = "tollgate-macos";
  bool force = false;
  bool json = false;
};

struct CheckFlags {
  std::string path;
  std::optional<std::string> profile;
  std::optional<std::string> app_profile;
  std::optional<std::string> extension_profile;
  std::optional<std::string> cert;
  std::optional<std::string> distribution;
  bool json = false;
};

// A failure before any check could run: stderr for people, a JSON object for CI.
int Fail(bool as_json, const std::string& command, const std::string& message, int code) {
  if (as_json) {
    std::printf("%s\n", json{{"error", message}, {"exit_code", code}}.dump(2).c_str());
  }
  std::fprintf(stderr, "tollgate macos %s: %s\n", command.c_str(), message.c_str());
  return code;
}

int RunScaffold(ScaffoldFlags& f) {
  f.options.app_group = f.app_group;
  f.options.distribution = kDistributions.at(f.distribution);
  auto files = macos::BuildScaffold(f.options);
  if (!files) return Fail(f.json, "scaffold", files.error().message, kExitUsage);
  auto names = macos::DeriveScaffoldNames(f.options);
  auto written = macos::WriteScaffold(*files, f.out, f.force);
  if (!written) {
    int code = written.error().code == ErrorCode::kInvalidArgument ? kExitUsage : kExitUnreadable;
    return Fail(f.json, "scaffold", written.error().message, code);
  }
  if (f.json) {
    json out = {{"out", f.out},
                {"files", *written},
                {"team_id", f.options.team_id},
                {"bundle_id", f.options.bundle_id},
                {"extension_bundle_id", names->extension_bundle_id},
                {"app_group", names->app_group},
                {"daemon_label", names->daemon_label},
                {"analysis_service", names->analysis_service},
                {"distribution", f.distribution}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    for (const std::string& p : *written) std::printf("wrote %s\n", p.c_str());
    std::printf("app group %s, daemon Mach service %s (%s signing); see %s/README.md\n",
                names->app_group.c_str(), names->analysis_service.c_str(), f.distribution.c_str(),
                f.out.c_str());
  }
  return kExitClean;
}

json FindingJson(const macos::Finding& f) {
  return json{{"id", f.id}, {"file", f.file}, {"what", f.what}, {"why", f.why}, {"fix", f.fix}};
}

void PrintFindings(const std::vector<macos::Finding>& findings) {
  for (const macos::Finding& f : findings) {
    std::printf("%s: %s\n  what: %s\n  why:  %s\n  fix:  %s\n\n", f.file.c_str(), f.id.c_str(),
                f.what.c_str(), f.why.c_str(), f.fix.c_str());
  }
}

int RunCheck(const CheckFlags& f) {
  macos::LoadOptions load;
  load.profile_path = f.profile;
  load.app_profile_path = f.app_profile;
  load.extension_profile_path = f.extension_profile;
  if (f.cert) {
    auto pem = macos::ReadFileBounded(*f.cert, 1024 * 1024);
    if (!pem) return Fail(f.json, "check", "--cert: " + pem.error().message, kExitUnreadable);
    load.trusted_cert_pem = std::string(pem->begin(), pem->end());
  }
  macos::CheckOptions check;
  check.now_unix = static_cast<int64_t>(std::time(nullptr));
  if (f.distribution) check.distribution = kDistributions.at(*f.distribution);

  std::error_code ec;
  std::vector<macos::Finding> findings;
  json out = {{"path", f.path}};
  std::string summary;
  if (std::filesystem::is_regular_file(f.path, ec)) {
    auto report = macos::InspectFile(f.path, load, check);
    if (!report) return Fail(f.json, "check", report.error().message, kExitUnreadable);
    findings = std::move(report->findings);
    out["kind"] = report->kind;
    json facts = json::object();
    for (const auto& [label, value] : report->facts) facts[label] = value;
    out["facts"] = facts;
    if (!f.json) {
      std::printf("%s: %s\n", f.path.c_str(), report->kind.c_str());
      for (const auto& [label, value] : report->facts) {
        std::printf("  %s: %s\n", label.c_str(), value.c_str());
      }
      std::printf("\n");
    }
  } else {
    auto target = macos::LoadTarget(f.path, load);
    if (!target) return Fail(f.json, "check", target.error().message, kExitUnreadable);
    out["kind"] = target->kind == macos::MacosTarget::Kind::kBundle ? "bundle" : "sources";
    findings = macos::RunChecks(*target, check);
  }
  json list = json::array();
  for (const macos::Finding& finding : findings) list.push_back(FindingJson(finding));
  out["findings"] = list;
  out["clean"] = findings.empty();
  int code = findings.empty() ? kExitClean : kExitFindings;
  out["exit_code"] = code;
  if (f.json) {
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    PrintFindings(findings);
    if (findings.empty()) {
      std::printf("%s: no findings\n", f.path.c_str());
    } else {
      std::printf("%s: %zu finding(s)\n", f.path.c_str(), findings.size());
    }
  }
  return code;
}

}  // namespace

void AddMacosCommands(CLI::App& app, int* exit_code) {
  CLI::App* macos = app.add_subcommand(
      "macos", "Generate and verify the macOS content filter's plists, entitlements and profiles");
  macos->require_subcommand(1);

  auto scaffold_flags = std::make_shared<ScaffoldFlags>();
  CLI::App* scaffold = macos->add_subcommand(
      "scaffold", "Write a consistent app/extension/daemon configuration and a README");
  scaffold->add_option("--team-id", scaffold_flags->options.team_id, "Apple team ID (10 chars)")
      ->required();
  scaffold
      ->add_option("--bundle-id", scaffold_flags->options.bundle_id,
                   "the container app's bundle identifier, e.g. com.example.tollgate")
      ->required();
  scaffold->add_option("--app-group", scaffold_flags->app_group,
                       "app group shared by app and extension (default TEAMID.BUNDLE-ID)");
  scaffold->add_option("--name", scaffold_flags->options.app_name, "app name")
      ->capture_default_str();
  scaffold
      ->add_option("--distribution", scaffold_flags->distribution,
                   "signing identity: developer-id or development")
      ->check(CLI::IsMember({"developer-id", "development"}))
      ->capture_default_str();
  scaffold->add_option("--out", scaffold_flags->out, "output directory")->capture_default_str();
  scaffold->add_flag("--force", scaffold_flags->force, "overwrite existing files");
  scaffold->add_flag("--json", scaffold_flags->json, "print a JSON summary");
  scaffold->callback([scaffold_flags, exit_code] { *exit_code = RunScaffold(*scaffold_flags); });

  auto check_flags = std::make_shared<CheckFlags>();
  CLI::App* check = macos->add_subcommand(
      "check", "Check a built .app, a scaffold tree, or one file (profile, Mach-O, plist)");
  check->add_option("PATH", check_flags->path, "the .app, the scaffold directory, or a file")
      ->required();
  check->add_option("--profile", check_flags->profile,
                    "provisioning profile to use for both app and extension");
  check->add_option("--app-profile", check_flags->app_profile, "the app's provisioning profile");
  check->add_option("--extension-profile", check_flags->extension_profile,
                    "the extension's provisioning profile");
  check->add_option("--cert", check_flags->cert,
                    "PEM certificate trusted to sign profiles (e.g. Apple's root CA); verifies "
                    "profile signatures");
  check
      ->add_option("--distribution", check_flags->distribution,
                   "signing identity when no profile says: developer-id or development")
      ->check(CLI::IsMember({"developer-id", "development"}));
  check->add_flag("--json", check_flags->json, "print the findings as JSON");
  check->callback([check_flags, exit_code] { *exit_code = RunCheck(*check_flags); });
}

}  // namespace tollgate::cli
