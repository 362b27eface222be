// The AppClassifier backed by nDPI 4.2 (Debian's libndpi-dev): names the application protocol of a
// flow ("TLS", "HTTP", "SSH", "BitTorrent", ...), its category and nDPI's risk flags, from the
// client's first payload bytes that the filter handed over after an inspect verdict. The daemon
// creates one at start-up and calls it from the thread that decides verdicts; the rule loader uses
// KnowsProtocol/Suggest to check `app_protocol` names. Lives in its own library (tollgate_ndpi) so
// code that does not classify does not link nDPI.
//
// nDPI reads whole IP packets, and we only have the client's bytes, so each Classify synthesises
// the packets a client would have sent: one IPv4/IPv6 header plus a TCP (PSH|ACK, advancing
// sequence numbers, kTcpSegmentBytes per segment) or UDP header around the payload, taken from the
// tuple, with correct lengths. Checksums are left zero: nDPI 4.2 never verifies them. Each call
// uses a fresh, zeroed nDPI flow that is freed before returning, so no flow state is carried into
// the next call (cost: one ~700-byte calloc/free per call). What the detection module itself
// remembers is not ours to clear: nDPI 4.2 keeps address-keyed LRU caches (BitTorrent, STUN,
// Ookla, Zoom, mining, Teams) so that a later flow touching the same endpoints is named after an
// earlier one, e.g. junk from a host:port that once spoke BitTorrent comes back "BitTorrent".
// nDPI reports such answers as "DPI (cache)" (also, in 4.2, for the flow that filled the cache);
// Classify then re-runs the same bytes between two never-used addresses, and marks the answer
// `guessed` unless that run agrees: `guessed == false` means the bytes (with the ports) decided.
//
// Thread safety: nDPI's detection module holds the packet being processed and those caches, so
// two flows must never be processed on one module at the same time. A mutex serialises Classify;
// a caller that needs parallel classification creates one NdpiClassifier per thread. Measured on
// the 2-core dev VM: Create takes about 10 ms (30 ms the first time) and adds about 7 MiB RSS
// (nDPI counts 8.5 MiB allocated); one Classify of a ClientHello costs about 5 us, an HTTP GET
// 2 us, 16 KiB of junk (12 segments) 22 us.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/app_classifier.h"
#include "common/error.h"
#include "common/flow.h"

// nDPI's module, opaque here so that including this header does not pull nDPI's headers (and their
// macros) into the daemon.
struct ndpi_detection_module_struct;

namespace tollgate::analysis {

// Client bytes beyond this are not fed to nDPI: every protocol it knows decides far earlier, and
// the bound keeps the per-call cost fixed (about 45 segments at most).
inline constexpr size_t kNdpiMaxClassifyBytes = 64 * 1024;
// Payload bytes per synthesised TCP segment: a common Ethernet MSS, so nDPI sees what it would
// see on the wire (its TLS dissector reassembles a ClientHello spread over segments).
inline constexpr size_t kTcpSegmentBytes = 1460;

class NdpiClassifier final : public AppClassifier {
 public:
  // Initialises an nDPI detection module with every protocol enabled. kUnavailable when nDPI
  // cannot allocate it.
  static Expected<std::unique_ptr<NdpiClassifier>> Create();
  ~NdpiClassifier() override;
  NdpiClassifier(const NdpiClassifier&) = delete;
  NdpiClassifier& operator=(const NdpiClassifier&) = delete;

  // protocol: nDPI's most specific name (the app protocol when it knows one, e.g. "Google" for
  // TLS to Google, else the master protocol, else "Unknown"); master: the protocol it rides on
  // ("TLS") when nDPI names two, "" otherwise. When the bytes do not decide, nDPI's guess from
  // ports and addresses (ndpi_detection_giveup) or its cache is taken and `guessed` is set.
  // category: nDPI's category name, "" when unspecified; risks: ndpi_risk2str of each risk bit.
  // Other IP protocols than TCP and UDP get the payload right after the IP header. Bytes past
  // kNdpiMaxClassifyBytes are ignored. kInvalidArgument only for a tuple whose addresses are not
  // both IPv4 or both IPv6.
  Expected<AppClassification> Classify(const FlowTuple& tuple,
                                       std::span<const uint8_t> client_bytes) override;
  // Case-insensitive against every protocol name of the module, "Unknown" included (a rule may
  // match flows nDPI cannot name).
  bool KnowsProtocol(std::string_view name) const override;
  // The known name at the smallest case-insensitive edit distance, if that distance is at most 2
  // (1 for names of 4 characters or fewer, where 2 edits make anything look alike); "" otherwise.
  // A name differing only in case gets its canonical spelling ("tls" -> "TLS").
  std::string Suggest(std::string_view name) const override;

  // Every protocol name the module knows, in nDPI's id order, as nDPI spells them.
  const std::vector<std::string>& protocol_names() const { return names_; }

 private:
  NdpiClassifier(ndpi_detection_module_struct* module, std::vector<std::string> names);

  std::mutex mutex_;                      // guards module_ and packet_ during Classify
  ndpi_detection_module_struct* module_;  // owned; freed with ndpi_exit_detection_module
  std::vector<std::string> names_;        // immutable after Create, so no lock to read it
  std::vector<std::string> lower_names_;  // names_ folded to lowercase, same order
  std::vector<uint8_t> packet_;           // reused buffer for the synthesised packet
  uint32_t verify_counter_ = 0;           // picks unused addresses for cache-answer checks
};

}  // namespace tollgate::analysis
