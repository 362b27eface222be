#include "macos/checks.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/error.h"

namespace tollgate::macos {
namespace {

const std::vector<FindingKind> kCatalog = {
    {"unreadable-file",
     "A file the system reads at install or launch time could not be parsed; macOS will refuse "
     "the bundle or ignore the file, and every check that needs it was skipped.",
     "Regenerate the file (tollgate macos scaffold) or validate it with `plutil -lint`; for an "
     "executable, re-sign it with codesign."},
    {"component-missing",
     "A content filter needs the container app, the system extension and the launch daemon "
     "together; with one missing, the filter cannot be activated or cannot get answers.",
     "Build and embed the missing part at the path named in this finding."},
    {"slice-entitlements-differ",
     "Each architecture of a universal binary carries its own code signature; a Mac runs one "
     "slice, so a machine of the other architecture gets different entitlements.",
     "Sign every slice with the same entitlements file (codesign --entitlements FILE on the "
     "universal binary, after lipo)."},
    {"profile-missing",
     "App groups and the NetworkExtension entitlement are restricted: without an embedded "
     "provisioning profile authorising them, macOS drops the entitlements-validated flag and the "
     "filter and its XPC connection fail in confusing ways.",
     "Embed the profile from the developer portal as Contents/embedded.provisionprofile (Xcode "
     "does this when the target has a provisioning profile)."},
    {"profile-signature-invalid",
     "A profile whose CMS signature does not verify was altered or is not Apple's; macOS rejects "
     "it and, with it, every restricted entitlement.",
     "Download the profile again from the developer portal; do not edit profiles."},
    {"profile-expired",
     "macOS does not launch code whose profile has expired (Developer ID profiles last 18 years, "
     "development ones a year).",
     "Regenerate the profile in the developer portal, embed it and re-sign."},
    {"profile-app-id-mismatch",
     "A profile authorises one application identifier (TEAMID.bundle-id); for any other bundle "
     "its entitlements count for nothing.",
     "Use the profile made for this bundle identifier, or make the bundle identifier match it."},
    {"app-group-not-in-profile",
     "An app group claimed in the entitlements but not authorised by the profile is the "
     "entitlements-validated trap: the process loses its validated entitlements, and the Mach "
     "service under that group becomes unreachable from the sandbox.",
     "Add the group to the App ID's App Groups capability in the developer portal and download "
     "the profile again, or claim only groups the profile lists."},
    {"mach-service-not-in-app-group",
     "A sandboxed system extension may look up only Mach services whose name is prefixed with an "
     "app group it claims; any other name is blocked by the sandbox.",
     "Name the daemon's MachServices entry GROUP.something, with GROUP one of the extension's "
     "com.apple.security.application-groups."},
    {"extension-not-sandboxed",
     "System extensions must be sandboxed; sysextd refuses to activate an unsandboxed one.",
     "Set com.apple.security.app-sandbox to true in the extension's entitlements."},
    {"network-extension-entitlement-missing",
     "Without com.apple.developer.networking.networkextension listing a content filter, the "
     "provider cannot be loaded and the app cannot save the filter configuration.",
     "Add the entitlement with content-filter-provider-systemextension (Developer ID) or "
     "content-filter-provider (development)."},
    {"network-extension-entitlement-wrong-variant",
     "Developer ID signed system extensions must use the -systemextension values, development "
     "signed ones the plain values; the other variant is not in the profile and is rejected.",
     "Use content-filter-provider-systemextension for Developer ID, content-filter-provider for "
     "development signing."},
    {"provider-classes-missing-filter-data",
     "NetworkExtension finds the filter's class through NEProviderClasses; without a filter-data "
     "entry the extension loads but never filters.",
     "Add com.apple.networkextension.filter-data -> MODULE.FilterDataProvider under "
     "NetworkExtension/NEProviderClasses in the extension's Info.plist."},
    {"system-extension-install-missing",
     "Only an app with com.apple.developer.system-extension.install may submit an activation "
     "request for its system extension.",
     "Set com.apple.developer.system-extension.install to true in the app's entitlements."},
    {"team-id-mismatch",
     "App groups, Mach service lookups and the daemon's code requirement all assume one team; "
     "parts signed or provisioned for different teams cannot talk to each other.",
     "Sign the app, the extension and the daemon with the same team, with profiles of that "
     "team."},
    {"daemon-not-on-demand",
     "With RunAtLoad or KeepAlive the daemon runs from boot whether or not the filter needs it; "
     "Tollgate's daemon is meant to start on demand when the extension looks up its Mach "
     "service, and to exit when idle.",
     "Remove RunAtLoad and KeepAlive from the daemon's plist; MachServices alone starts it on "
     "demand."},
    {"daemon-mach-service-missing",
     "The extension reaches the daemon through a Mach service that launchd publishes from the "
     "daemon's MachServices; with no matching entry, the connection is invalidated at once.",
     "List the service the extension connects to (its TollgateAnalysisMachService) under "
     "MachServices in the daemon's plist."},
    {"daemon-bundle-program-missing",
     "SMAppService starts the daemon from BundleProgram, a path relative to the app bundle; if it "
     "is missing or names nothing, registration succeeds but launchd cannot start the daemon.",
     "Set BundleProgram to the daemon's path inside the bundle, e.g. Contents/MacOS/tollgated, "
     "and embed the executable there."},
    {"agent-offers-mach-service",
     "A launch agent runs per user session, in the user's context; a daemon or system extension "
     "must never depend on an agent, which is absent at the login window and differs per user.",
     "Offer the Mach service from the launch daemon (Contents/Library/LaunchDaemons) instead."},
};

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out.empty() ? "(none)" : out;
}

std::vector<std::string> MachServices(const LaunchJob& job) {
  return job.plist["MachServices"].Keys();
}

std::optional<Distribution> SigningDistribution(const MacosTarget& t, const CheckOptions& o) {
  if (t.extension && t.extension->profile) {
    const ProvisioningProfile& p = *t.extension->profile;
    if (p.provisions_all_devices) return Distribution::kDeveloperId;
    if (p.provisioned_devices > 0) return Distribution::kDevelopment;
  }
  return o.distribution;
}

void CheckProfile(const Component& c, const CheckOptions& options, std::vector<Finding>& out) {
  if (c.entitlements.IsNull()) return;
  if (!c.profile) {
    out.push_back(MakeFinding("profile-missing", c.profile_path,
                              "the " + c.name + " has no embedded provisioning profile"));
    return;
  }
  const ProvisioningProfile& p = *c.profile;
  if (p.signature == SignatureCheck::kInvalid) {
    out.push_back(MakeFinding("profile-signature-invalid", c.profile_path,
                              "the profile's CMS signature does not verify against the given "
                              "certificate: " +
                                  p.signature_error));
  }
  if (p.expiration_unix && *p.expiration_unix <= options.now_unix) {
    out.push_back(MakeFinding("profile-expired", c.profile_path,
                              "profile \"" + p.name + "\" expired " +
                                  std::to_string((options.now_unix - *p.expiration_unix) / 86400) +
                                  " day(s) ago"));
  } else if (!p.expiration_unix) {
    out.push_back(MakeFinding("profile-expired", c.profile_path, "profile has no ExpirationDate"));
  }
  auto bundle_id = c.info["CFBundleIdentifier"].String();
  if (bundle_id) {
    std::string team = !p.team_ids.empty()          ? p.team_ids.front()
                       : !p.app_id_prefixes.empty() ? p.app_id_prefixes.front()
                                                    : std::string();
    std::string expected = team + "." + *bundle_id;
    auto app_id = p.ApplicationIdentifier();
    if (!app_id || !MatchesPattern(expected, *app_id)) {
      out.push_back(MakeFinding("profile-app-id-mismatch", c.profile_path,
                                "the profile is for application identifier " +
                                    app_id.value_or("(none)") + ", but the " + c.name + " is " +
                                    expected + " (CFBundleIdentifier in " + c.info_path + ")"));
    }
  }
  std::vector<std::string> allowed = p.ApplicationGroups();
  for (const std::string& group : c.entitlements[kAppGroupsKey].Strings()) {
    bool ok = std::any_of(allowed.begin(), allowed.end(),
                          [&](const std::string& pat) { return MatchesPattern(group, pat); });
    if (!ok) {
      out.push_back(MakeFinding(
          "app-group-not-in-profile", c.entitlements_path,
          "the " + c.name + " claims app group " + group +
              ", which its profile does not authorise (profile lists: " + Join(allowed) + ")"));
    }
  }
}

void CheckNetworkExtension(const Component& c, std::optional<Distribution> dist,
                           std::vector<Finding>& out) {
  if (c.entitlements.IsNull()) return;
  std::vector<std::string> values = c.entitlements[kNetworkExtensionKey].Strings();
  bool plain = std::find(values.begin(), values.end(), kContentFilterPlain) != values.end();
  bool sysext =
      std::find(values.begin(), values.end(), kContentFilterSystemExtension) != values.end();
  if (!plain && !sysext) {
    out.push_back(MakeFinding("network-extension-entitlement-missing", c.entitlements_path,
                              std::string("the ") + c.name + "'s " + kNetworkExtensionKey +
                                  " lists no content filter (values: " + Join(values) + ")"));
    return;
  }
  if (!dist) return;
  const char* wanted =
      *dist == Distribution::kDeveloperId ? kContentFilterSystemExtension : kContentFilterPlain;
  bool ok = *dist == Distribution::kDeveloperId ? sysext : plain;
  if (!ok) {
    out.push_back(MakeFinding("network-extension-entitlement-wrong-variant", c.entitlements_path,
                              "the " + c.name + " is signed for " + DistributionName(*dist) +
                                  " but its " + kNetworkExtensionKey + " has " + Join(values) +
                                  " instead of " + wanted));
  }
}

void CheckTeams(const MacosTarget& t, std::vector<Finding>& out) {
  struct Source {
    std::string label;
    std::string file;
    std::string team;
  };
  std::vector<Source> sources;
  auto add_component = [&](const std::optional<Component>& c) {
    if (!c) return;
    if (auto v = c->entitlements[kTeamIdentifierKey].String()) {
      sources.push_back({c->name + " " + kTeamIdentifierKey, c->entitlements_path, *v});
    }
    if (auto v = c->entitlements[kAppIdentifierKey].String()) {
      sources.push_back(
          {c->name + " " + kAppIdentifierKey, c->entitlements_path, v->substr(0, v->find('.'))});
    }
    if (c->code_team_id)
      sources.push_back({c->name + " code signature", c->info_path, *c->code_team_id});
    if (c->profile && !c->profile->team_ids.empty()) {
      sources.push_back({c->name + " profile", c->profile_path, c->profile->team_ids.front()});
    }
  };
  add_component(t.app);
  add_component(t.extension);
  for (const LaunchJob& d : t.daemons) {
    if (d.code_team_id) sources.push_back({"daemon code signature", d.path, *d.code_team_id});
  }
  std::map<std::string, int> votes;
  for (const Source& s : sources) ++votes[s.team];
  if (votes.size() <= 1) return;
  std::string majority =
      std::max_element(votes.begin(), votes.end(), [](const auto& a, const auto& b) {
        return a.second < b.second;
      })->first;
  std::string what = "team IDs disagree:";
  std::string file;
  for (const Source& s : sources) {
    what += " " + s.label + "=" + s.team + ";";
    if (file.empty() && s.team != majority) file = s.file;
  }
  what.pop_back();
  out.push_back(MakeFinding("team-id-mismatch", file, what));
}

void CheckDaemon(const LaunchJob& d, std::vector<Finding>& out) {
  std::vector<std::string> reasons;
  if (d.plist["RunAtLoad"].Bool().value_or(false)) reasons.push_back("RunAtLoad is true");
  PlistRef keep_alive = d.plist["KeepAlive"];
  if (keep_alive.Bool().value_or(false) ||
      (keep_alive.Type() == PLIST_DICT && !keep_alive.Keys().empty())) {
    reasons.push_back("KeepAlive is set");
  }
  if (!reasons.empty()) {
    out.push_back(
        MakeFinding("daemon-not-on-demand", d.path, "the daemon starts at load: " + Join(reasons)));
  }
  if (MachServices(d).empty()) {
    out.push_back(MakeFinding("daemon-mach-service-missing", d.path,
                              "the daemon's plist has no MachServices entry, so nothing can "
                              "connect to it and launchd never starts it on demand"));
  }
  auto program = d.plist["BundleProgram"].String();
  std::string problem;
  if (!program || program->empty()) {
    problem = "the daemon's plist has no BundleProgram";
  } else if (program->front() == '/' || program->find("..") != std::string::npos) {
    problem = "BundleProgram " + *program + " is not a path inside the app bundle";
  } else if (d.bundle_program_exists == false) {
    problem = "BundleProgram " + *program + " names no file in the bundle";
  }
  if (!problem.empty())
    out.push_back(MakeFinding("daemon-bundle-program-missing", d.path, problem));
}

}  // namespace

const char* DistributionName(Distribution d) {
  return d == Distribution::kDeveloperId ? "developer-id" : "development";
}

const std::vector<FindingKind>& FindingCatalog() { return kCatalog; }

Finding MakeFinding(std::string_view id, std::string file, std::string what, std::string fix) {
  for (const FindingKind& k : kCatalog) {
    if (id == k.id) {
      return Finding{std::string(id), std::move(file), std::move(what), k.why,
                     fix.empty() ? std::string(k.fix) : std::move(fix)};
    }
  }
  TG_CHECK(false && "finding id missing from the catalog");
}

bool IsChildOf(std::string_view name, std::string_view parent) {
  return !parent.empty() && name.size() > parent.size() + 1 && name.starts_with(parent) &&
         name[parent.size()] == '.';
}

bool MatchesPattern(std::string_view value, std::string_view pattern) {
  if (!pattern.empty() && pattern.back() == '*') {
    return value.starts_with(pattern.substr(0, pattern.size() - 1));
  }
  return value == pattern;
}

std::vector<Finding> RunChecks(const MacosTarget& t, const CheckOptions& options) {
  std::vector<Finding> out = t.load_findings;
  std::optional<Distribution> dist = SigningDistribution(t, options);
  if (t.app) {
    CheckProfile(*t.app, options, out);
    CheckNetworkExtension(*t.app, dist, out);
    if (!t.app->entitlements.IsNull() &&
        !t.app->entitlements[kSystemExtensionInstallKey].Bool().value_or(false)) {
      out.push_back(MakeFinding(
          "system-extension-install-missing", t.app->entitlements_path,
          std::string("the app's entitlements lack ") + kSystemExtensionInstallKey + " = true"));
    }
  }
  std::vector<std::string> ext_groups;
  std::optional<std::string> ext_service;
  if (t.extension) {
    const Component& e = *t.extension;
    CheckProfile(e, options, out);
    CheckNetworkExtension(e, dist, out);
    if (!e.entitlements.IsNull()) {
      ext_groups = e.entitlements[kAppGroupsKey].Strings();
      if (!e.entitlements[kAppSandboxKey].Bool().value_or(false)) {
        out.push_back(MakeFinding(
            "extension-not-sandboxed", e.entitlements_path,
            std::string("the extension's entitlements lack ") + kAppSandboxKey + " = true"));
      }
    }
    if (!e.info.IsNull()) {
      ext_service = e.info[kAnalysisServiceKey].String();
      auto cls = e.info["NetworkExtension"]["NEProviderClasses"][kFilterDataProviderClass].String();
      if (!cls || cls->empty()) {
        out.push_back(MakeFinding("provider-classes-missing-filter-data", e.info_path,
                                  std::string("NetworkExtension/NEProviderClasses has no ") +
                                      kFilterDataProviderClass + " entry"));
      }
    }
  }
  CheckTeams(t, out);
  bool service_offered = false;
  for (const LaunchJob& d : t.daemons) {
    CheckDaemon(d, out);
    for (const std::string& s : MachServices(d)) {
      if (ext_service && s == *ext_service) service_offered = true;
      if (t.extension && !t.extension->entitlements.IsNull() &&
          std::none_of(ext_groups.begin(), ext_groups.end(),
                       [&](const std::string& g) { return IsChildOf(s, g); })) {
        out.push_back(MakeFinding("mach-service-not-in-app-group", d.path,
                                  "Mach service " + s +
                                      " is not under any app group the extension claims (" +
                                      Join(ext_groups) + ")"));
      }
    }
  }
  if (ext_service && !t.daemons.empty() && !service_offered) {
    bool already = false;
    for (const LaunchJob& d : t.daemons) {
      already = already || MachServices(d).empty();
    }
    if (!already) {
      out.push_back(MakeFinding("daemon-mach-service-missing", t.daemons.front().path,
                                "the extension connects to " + *ext_service + " (" +
                                    kAnalysisServiceKey + " in " + t.extension->info_path +
                                    "), which no launch daemon offers"));
    }
  }
  for (const LaunchJob& a : t.agents) {
    for (const std::string& s : MachServices(a)) {
      bool ours = (ext_service && s == *ext_service) ||
                  std::any_of(ext_groups.begin(), ext_groups.end(),
                              [&](const std::string& g) { return IsChildOf(s, g); });
      if (ours) {
        out.push_back(MakeFinding(
            "agent-offers-mach-service", a.path,
            "launch agent offers Mach service " + s + ", which the extension would depend on"));
      }
    }
  }
  return out;
}

}  // namespace tollgate::macos
