// Fuzzes the NFQUEUE packet parser: every byte string must be rejected with an error or parsed
// into a result whose payload lies inside the input (no crash, no over-read, no UB), and the flow
// helpers must accept whatever ParsePacket returns.
#include <cstddef>
#include <cstdint>
#include <span>

#include "flow/packet.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = tollgate::flow::ParsePacket(std::span(data, size));
  if (!parsed) {
    if (parsed.error().message.empty()) __builtin_trap();
    return 0;
  }
  const auto& payload = parsed->payload;
  if (!payload.empty() &&
      (payload.data() < data || payload.data() + payload.size() > data + size)) {
    __builtin_trap();
  }
  if (parsed->network_header_len > size) __builtin_trap();
  (void)tollgate::flow::IsNewFlowPacket(*parsed);
  (void)tollgate::flow::FlowKeyHash(1, 2)(tollgate::flow::FlowKeyOf(*parsed));
  return 0;
}
