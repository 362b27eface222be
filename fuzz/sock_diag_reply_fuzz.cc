// Fuzzes the sock_diag reply walker (platform/linux/attribution.h) and the parsers of /proc text
// that attribution reads (cmdline and the cgroup path are chosen by the process being looked at):
// every byte string must be rejected with an error naming a byte offset, or walked into sockets
// of a known family with an errno in range; no crash, over-read, UB or unbounded output.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "platform/linux/attribution.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tollgate;
  using namespace tollgate::platform;

  // Use the first message's sequence number so the walker gets past the sequence check.
  uint32_t sequence = 0;
  if (size >= 12) std::memcpy(&sequence, data + 8, sizeof(sequence));
  size_t visited = 0;
  auto walk = WalkSockDiagReply(std::span(data, size), sequence, [&](const SockDiagSocket& s) {
    ++visited;
    if (s.local.family != 4 && s.local.family != 6) __builtin_trap();
    if (s.local.family != s.remote.family) __builtin_trap();
    if (s.v6only < -1 || s.v6only > 1) __builtin_trap();
    int score = SocketMatchScore(s, s.local, s.local_port, s.remote, s.remote_port);
    if (score < -1 || score > kConnectedMatch + 2) __builtin_trap();
  });
  if (!walk) {
    if (walk.error().message.find("at byte") == std::string::npos) __builtin_trap();
  } else {
    if (walk->sockets != visited) __builtin_trap();
    if (walk->kernel_errno < 0 || walk->kernel_errno > 4095) __builtin_trap();
  }

  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (FormatCmdline(text).size() > kMaxCmdlineBytes) __builtin_trap();
  std::string unit = UnitFromProcCgroup(text);
  if (!unit.empty() && !unit.ends_with(".service") && !unit.ends_with(".scope")) __builtin_trap();
  if (unit.size() > size) __builtin_trap();
  (void)ParseProcStatus(text);
  (void)SocketInodeFromLink(text);
  return 0;
}
