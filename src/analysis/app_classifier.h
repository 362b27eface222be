// Application-protocol classification of a flow from its first client bytes (after an inspect
// verdict): "TLS", "HTTP", "SSH", "BitTorrent", ... with risk flags. Rules match the protocol by
// name (`app_protocol`). The implementation wraps nDPI (ndpi_classifier.h); the engine only sees
// this interface so tests can use a fake and another library could replace it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/flow.h"

namespace tollgate::analysis {

// nDPI often names two protocols, e.g. "TLS.Google": `protocol` holds the most specific one
// ("Google") and `master` the one it rides on ("TLS"). A rule `app_protocol = "TLS"` must match
// every TLS flow, so rules match a name against both (MatchesAppProtocol below).
struct AppClassification {
  std::string protocol;            // the classifier's name for the application protocol, e.g.
                                   // "TLS", "HTTP", "Google"; "Unknown" when it cannot tell
  std::string master;              // the protocol under `protocol` ("TLS" for "Google" over
                                   // TLS); "" when the classifier names only one
  std::string category;            // e.g. "Web"; "" when the classifier has none
  std::vector<std::string> risks;  // short risk names, e.g. "Known Protocol on Non Standard Port"
  bool guessed = false;            // the bytes did not decide: `protocol` is a guess from the
                                   // ports/addresses (junk sent to port 443 is guessed "TLS") or
                                   // from earlier flows between the same hosts, so a rule should
                                   // not trust it like a classification
};

// Whether a rule's `app_protocol` name (case-insensitive) names this flow: its protocol or master.
inline bool MatchesAppProtocol(const AppClassification& c, std::string_view name) {
  auto equal = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      auto lower = [](char ch) { return ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch + 32) : ch; };
      if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
  };
  return equal(c.protocol, name) || (!c.master.empty() && equal(c.master, name));
}

class AppClassifier {
 public:
  virtual ~AppClassifier() = default;
  // Classifies from the client's first bytes of the flow described by `tuple` (src = the client).
  // Hostile bytes are normal input: never crashes, never throws; an Error only when the classifier
  // itself cannot run (e.g. failed to initialise).
  virtual Expected<AppClassification> Classify(const FlowTuple& tuple,
                                               std::span<const uint8_t> client_bytes) = 0;
  // Whether `name` (case-insensitive) is a protocol name this classifier can return, so the rule
  // loader can refuse a misspelt `app_protocol` with a suggestion.
  virtual bool KnowsProtocol(std::string_view name) const = 0;
  // The closest known protocol name to `name`, for "did you mean" messages; "" if none is close.
  virtual std::string Suggest(std::string_view name) const = 0;
};

}  // namespace tollgate::analysis
