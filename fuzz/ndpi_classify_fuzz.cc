// Fuzzes the nDPI classifier with hostile client bytes: the first three input bytes pick the
// flow (TCP/UDP/ICMP, IPv4/IPv6, server port), the rest is the payload. Every input must give a
// classification whose names the classifier itself knows, never a crash; the name lookups must
// take any string. nDPI 4.2 itself is not instrumented here (Debian's shared library), so only
// crashes inside it show, not silent over-reads (see ndpi_classifier.cc, kPacketSlack).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "analysis/ndpi_classifier.h"

namespace {
tollgate::analysis::NdpiClassifier& Classifier() {
  static std::unique_ptr<tollgate::analysis::NdpiClassifier> classifier = [] {
    auto created = tollgate::analysis::NdpiClassifier::Create();
    if (!created) __builtin_trap();
    return std::move(*created);
  }();
  return *classifier;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  auto& classifier = Classifier();
  using tollgate::FlowTuple;
  using tollgate::IpAddress;
  namespace ipproto = tollgate::ipproto;

  FlowTuple tuple;
  const uint8_t selector = data[0];
  const bool v6 = (selector & 1) != 0;
  switch ((selector >> 1) & 3) {
    case 0:
    case 1:
      tuple.protocol = ipproto::kTcp;
      break;
    case 2:
      tuple.protocol = ipproto::kUdp;
      break;
    default:
      tuple.protocol = v6 ? ipproto::kIcmpV6 : ipproto::kIcmp;
      break;
  }
  if (v6) {
    tuple.src = *IpAddress::Parse("2001:db8::10");
    tuple.dst = *IpAddress::Parse("2001:db8::20");
  } else {
    // A few client addresses, so nDPI's address-keyed caches see repeats and strangers.
    tuple.src = IpAddress::V4(192, 0, 2, static_cast<uint8_t>(10 + (selector >> 6)));
    tuple.dst = IpAddress::V4(198, 51, 100, 20);
  }
  tuple.src_port = static_cast<uint16_t>(40000 + (selector >> 3));
  tuple.dst_port = static_cast<uint16_t>((data[1] << 8) | data[2]);
  std::span<const uint8_t> payload(data + 3, size - 3);

  auto result = classifier.Classify(tuple, payload);
  if (!result) __builtin_trap();  // a valid tuple always classifies
  if (!classifier.KnowsProtocol(result->protocol)) __builtin_trap();
  if (!result->master.empty() && !classifier.KnowsProtocol(result->master)) __builtin_trap();
  if (result->protocol == "Unknown" && result->guessed) __builtin_trap();

  std::string_view name(reinterpret_cast<const char*>(payload.data()),
                        payload.size() < 64 ? payload.size() : 64);
  (void)classifier.KnowsProtocol(name);
  std::string suggestion = classifier.Suggest(name);
  if (!suggestion.empty() && !classifier.KnowsProtocol(suggestion)) __builtin_trap();
  return 0;
}
