#include "analysis/ndpi_classifier.h"

#include <ndpi/ndpi_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

namespace tollgate::analysis {
namespace {

constexpr size_t kIpv4HeaderBytes = 20;
constexpr size_t kIpv6HeaderBytes = 40;
constexpr size_t kTcpHeaderBytes = 20;
constexpr size_t kUdpHeaderBytes = 8;
// nDPI takes the packet length as an unsigned short.
constexpr size_t kMaxPacketBytes = 65535;
// Zeroed bytes after every synthesised packet: nDPI 4.2 is not built with sanitizers, so a
// dissector reading a little past the packet it was given would go unnoticed; this way it reads
// zeros of our own buffer rather than whatever follows on the heap.
constexpr size_t kPacketSlack = 64;
// Arbitrary non-zero initial sequence numbers: nDPI treats a zero next-sequence as "not seen yet".
constexpr uint32_t kClientIsn = 0x1000;
constexpr uint32_t kServerIsn = 0x8000;

void Put16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void Put32(uint8_t* p, uint32_t v) {
  Put16(p, v >> 16);
  Put16(p + 2, v);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  }
  return out;
}

// Levenshtein distance with two rows; names are short (<= ~30 characters).
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1);
  std::vector<size_t> cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitute = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitute});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string ProtoName(ndpi_detection_module_struct* module, uint16_t id) {
  const char* name = ndpi_get_proto_name(module, id);
  return name != nullptr ? std::string(name) : std::string("Unknown");
}

// Writes the IP header for `l4_bytes` bytes after it; returns the header length.
size_t WriteIpHeader(uint8_t* p, const FlowTuple& tuple, size_t l4_bytes) {
  if (tuple.src.family == 4) {
    p[0] = 0x45;  // version 4, 5 words of header
    p[1] = 0;
    Put16(p + 2, static_cast<uint32_t>(kIpv4HeaderBytes + l4_bytes));
    Put16(p + 4, 0);       // identification
    Put16(p + 6, 0x4000);  // don't fragment, offset 0: nDPI skips fragments
    p[8] = 64;             // TTL
    p[9] = tuple.protocol;
    Put16(p + 10, 0);  // checksum: nDPI does not verify it
    std::memcpy(p + 12, tuple.src.bytes.data(), 4);
    std::memcpy(p + 16, tuple.dst.bytes.data(), 4);
    return kIpv4HeaderBytes;
  }
  Put32(p, 0x60000000);  // version 6, traffic class and flow label 0
  Put16(p + 4, static_cast<uint32_t>(l4_bytes));
  p[6] = tuple.protocol;  // next header: no extension headers
  p[7] = 64;              // hop limit
  std::memcpy(p + 8, tuple.src.bytes.data(), 16);
  std::memcpy(p + 24, tuple.dst.bytes.data(), 16);
  return kIpv6HeaderBytes;
}

struct FlowDeleter {
  void operator()(ndpi_flow_struct* flow) const {
    ndpi_free_flow_data(flow);  // what the dissectors allocated (TLS reassembly, names, ...)
    std::free(flow);
  }
};

// What one synthesised flow told us; the flow itself is freed before returning.
struct FlowOutcome {
  bool ran = false;  // false only when the flow could not be allocated
  ndpi_protocol protocol = NDPI_PROTOCOL_NULL;
  ndpi_confidence_t confidence = NDPI_CONFIDENCE_UNKNOWN;
  ndpi_risk risk = 0;
};

// Feeds `payload` to a fresh nDPI flow as the packets the client of `tuple` would have sent, then
// takes nDPI's guess if the bytes did not decide. `packet` is the caller's scratch buffer.
FlowOutcome RunFlow(ndpi_detection_module_struct* module, std::vector<uint8_t>& packet,
                    const FlowTuple& tuple, std::span<const uint8_t> payload) {
  FlowOutcome outcome;
  const bool tcp = tuple.protocol == ipproto::kTcp;
  const bool udp = tuple.protocol == ipproto::kUdp;
  const size_t ip_bytes = tuple.src.family == 4 ? kIpv4HeaderBytes : kIpv6HeaderBytes;
  const size_t l4_header = tcp ? kTcpHeaderBytes : udp ? kUdpHeaderBytes : 0;
  // TCP is cut into segments; anything else is one datagram, truncated to what fits in one.
  const size_t per_packet = tcp ? kTcpSegmentBytes : kMaxPacketBytes - ip_bytes - l4_header;
  if (!tcp) payload = payload.first(std::min(payload.size(), per_packet));

  std::unique_ptr<ndpi_flow_struct, FlowDeleter> flow(
      static_cast<ndpi_flow_struct*>(std::calloc(1, SIZEOF_FLOW_STRUCT)));
  if (!flow) return outcome;
  outcome.ran = true;
  const uint64_t now_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());

  ndpi_protocol result = NDPI_PROTOCOL_NULL;
  size_t offset = 0;
  uint32_t seq = kClientIsn;
  do {  // at least one packet, so an empty payload still shows nDPI the ports
    const size_t chunk = std::min(payload.size() - offset, per_packet);
    uint8_t* p = packet.data();
    std::memset(p, 0, ip_bytes + l4_header + chunk + kPacketSlack);
    size_t at = WriteIpHeader(p, tuple, l4_header + chunk);
    if (tcp) {
      Put16(p + at, tuple.src_port);
      Put16(p + at + 2, tuple.dst_port);
      Put32(p + at + 4, seq);
      Put32(p + at + 8, kServerIsn);  // ack of the server's SYN; non-zero so nDPI tracks sequence
      p[at + 12] = 0x50;              // data offset: 5 words, no options
      p[at + 13] = 0x18;              // PSH|ACK: a data segment of an established connection
      Put16(p + at + 14, 0xffff);     // window; checksum and urgent pointer stay zero
    } else if (udp) {
      Put16(p + at, tuple.src_port);
      Put16(p + at + 2, tuple.dst_port);
      Put16(p + at + 4, static_cast<uint32_t>(kUdpHeaderBytes + chunk));
    }
    at += l4_header;
    if (chunk > 0) std::memcpy(p + at, payload.data() + offset, chunk);
    result = ndpi_detection_process_packet(module, flow.get(), p,
                                           static_cast<unsigned short>(at + chunk), now_ms);
    offset += chunk;
    seq += static_cast<uint32_t>(chunk);
    const bool detected = result.app_protocol != NDPI_PROTOCOL_UNKNOWN ||
                          result.master_protocol != NDPI_PROTOCOL_UNKNOWN;
    if (detected && ndpi_extra_dissection_possible(module, flow.get()) == 0) break;
  } while (offset < payload.size());

  if (result.app_protocol == NDPI_PROTOCOL_UNKNOWN &&
      result.master_protocol == NDPI_PROTOCOL_UNKNOWN) {
    uint8_t was_guessed = 0;  // flow->confidence says the same and more
    result = ndpi_detection_giveup(module, flow.get(), /*enable_guess=*/1, &was_guessed);
  }
  outcome.protocol = result;
  outcome.confidence = flow->confidence;
  outcome.risk = flow->risk;
  return outcome;
}

// The n-th address of a range no real flow uses: 240.0.0.0/4 (reserved, RFC 1112) or 100::/64
// (discard-only, RFC 6666).
IpAddress UnusedAddress(uint8_t family, uint32_t n) {
  IpAddress ip;
  ip.family = family;
  if (family == 4) {
    const uint32_t v = 0xf0000000u | (n & 0x0fffffffu);
    ip.bytes = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  } else {
    ip.bytes = {0x01, 0x00};
    for (int i = 0; i < 4; ++i) ip.bytes[12 + i] = static_cast<uint8_t>(n >> (24 - 8 * i));
  }
  return ip;
}

}  // namespace

Expected<std::unique_ptr<NdpiClassifier>> NdpiClassifier::Create() {
  // ndpi_init_detection_module must not run concurrently with itself (nDPI's own rule); creating
  // classifiers from several threads at once is serialised here.
  static std::mutex init_mutex;
  std::lock_guard<std::mutex> init_lock(init_mutex);
  ndpi_detection_module_struct* module = ndpi_init_detection_module(ndpi_no_prefs);
  if (module == nullptr) {
    return Unexpected(ErrorCode::kUnavailable,
                      "nDPI: ndpi_init_detection_module failed (out of memory?); protocol rules "
                      "(app_protocol) cannot be evaluated");
  }
  NDPI_PROTOCOL_BITMASK all;
  NDPI_BITMASK_SET_ALL(all);
  ndpi_set_protocol_detection_bitmask2(module, &all);
  ndpi_finalize_initialization(module);

  std::vector<std::string> names;
  const unsigned count = ndpi_get_num_supported_protocols(module);
  names.reserve(count);
  for (unsigned id = 0; id < count && id <= 0xffff; ++id) {
    std::string name = ProtoName(module, static_cast<uint16_t>(id));
    std::string lower = Lower(name);
    bool seen = std::any_of(names.begin(), names.end(),
                            [&](const std::string& n) { return Lower(n) == lower; });
    // "FREE_64" and the like hold a free protocol id; no flow is ever named so.
    const bool placeholder = lower.rfind("free_", 0) == 0;
    if (!seen && !placeholder && !name.empty()) names.push_back(std::move(name));
  }
  return std::unique_ptr<NdpiClassifier>(new NdpiClassifier(module, std::move(names)));
}

NdpiClassifier::NdpiClassifier(ndpi_detection_module_struct* module, std::vector<std::string> names)
    : module_(module), names_(std::move(names)) {
  lower_names_.reserve(names_.size());
  for (const std::string& n : names_) lower_names_.push_back(Lower(n));
  packet_.resize(kMaxPacketBytes + kPacketSlack);
}

NdpiClassifier::~NdpiClassifier() { ndpi_exit_detection_module(module_); }

Expected<AppClassification> NdpiClassifier::Classify(const FlowTuple& tuple,
                                                     std::span<const uint8_t> client_bytes) {
  if ((tuple.src.family != 4 && tuple.src.family != 6) || tuple.src.family != tuple.dst.family) {
    return Unexpected(ErrorCode::kInvalidArgument,
                      "nDPI classify: flow " + tuple.src.ToString() + " -> " +
                          tuple.dst.ToString() +
                          " does not have two IPv4 or two IPv6 addresses; this is a caller bug");
  }
  std::span<const uint8_t> payload =
      client_bytes.first(std::min(client_bytes.size(), kNdpiMaxClassifyBytes));

  std::lock_guard<std::mutex> lock(mutex_);
  FlowOutcome outcome = RunFlow(module_, packet_, tuple, payload);
  if (!outcome.ran) {
    return Unexpected(ErrorCode::kUnavailable,
                      "nDPI classify: cannot allocate a flow (out of memory)");
  }
  const ndpi_protocol result = outcome.protocol;
  const bool known = result.app_protocol != NDPI_PROTOCOL_UNKNOWN ||
                     result.master_protocol != NDPI_PROTOCOL_UNKNOWN;
  AppClassification out;
  // NDPI_CONFIDENCE_DPI: these bytes decided. "Match by port" / "Match by IP": giveup's guess.
  // "DPI (cache)": nDPI's address-keyed memory answered, which it also does for the very flow
  // that filled it (a genuine BitTorrent handshake comes back as "DPI (cache)" in 4.2). To tell
  // the two apart, the same bytes and ports are run again between two addresses no flow has
  // used, where no memory can answer: if that run names the same protocol, the bytes decided.
  if (known && outcome.confidence == NDPI_CONFIDENCE_DPI_CACHE) {
    FlowTuple fresh = tuple;
    fresh.src = UnusedAddress(tuple.src.family, verify_counter_++);
    fresh.dst = UnusedAddress(tuple.src.family, verify_counter_++);
    FlowOutcome check = RunFlow(module_, packet_, fresh, payload);
    out.guessed = !check.ran || check.protocol.app_protocol != result.app_protocol ||
                  check.protocol.master_protocol != result.master_protocol;
  } else {
    out.guessed = known && outcome.confidence != NDPI_CONFIDENCE_DPI;
  }
  const uint16_t specific =
      result.app_protocol != NDPI_PROTOCOL_UNKNOWN ? result.app_protocol : result.master_protocol;
  out.protocol = ProtoName(module_, specific);
  if (result.master_protocol != NDPI_PROTOCOL_UNKNOWN && result.master_protocol != specific) {
    out.master = ProtoName(module_, result.master_protocol);
  }
  const ndpi_protocol_category_t category = ndpi_get_proto_category(module_, result);
  if (category != NDPI_PROTOCOL_CATEGORY_UNSPECIFIED) {
    const char* name = ndpi_category_get_name(module_, category);
    if (name != nullptr) out.category = name;
  }
  for (int r = NDPI_NO_RISK + 1; r < NDPI_MAX_RISK; ++r) {
    if ((outcome.risk & (ndpi_risk{1} << r)) == 0) continue;
    const char* name = ndpi_risk2str(static_cast<ndpi_risk_enum>(r));
    if (name != nullptr) out.risks.emplace_back(name);
  }
  return out;
}

bool NdpiClassifier::KnowsProtocol(std::string_view name) const {
  const std::string lower = Lower(name);
  return std::find(lower_names_.begin(), lower_names_.end(), lower) != lower_names_.end();
}

std::string NdpiClassifier::Suggest(std::string_view name) const {
  if (name.empty()) return "";
  const std::string lower = Lower(name);
  const size_t limit = lower.size() <= 4 ? 1 : 2;
  size_t best = limit + 1;
  size_t best_index = 0;
  for (size_t i = 0; i < lower_names_.size(); ++i) {
    // Names whose lengths differ by more than the limit cannot be within it.
    const size_t a = lower_names_[i].size();
    if ((a > lower.size() ? a - lower.size() : lower.size() - a) > limit) continue;
    const size_t d = EditDistance(lower, lower_names_[i]);
    if (d < best) {
      best = d;
      best_index = i;
      if (d == 0) break;
    }
  }
  return best <= limit ? names_[best_index] : "";
}

}  // namespace tollgate::analysis
