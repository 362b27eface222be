// Fuzzes the first-bytes readers (TLS ClientHello, HTTP Host): every byte string must give a
// value or an error with a message, never a crash, an over-read or a name with bytes a host rule
// could be fooled by; "need more" must always ask for more than was given.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "analysis/first_bytes.h"

namespace {
void CheckName(const std::string& name) {
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':';
    if (!ok) __builtin_trap();
  }
}

template <typename T>
void CheckError(const tollgate::Expected<T>& result, size_t needed, size_t size) {
  if (result) return;
  if (result.error().message.empty()) __builtin_trap();
  if (result.error().code == tollgate::ErrorCode::kUnavailable && needed <= size) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  (void)tollgate::analysis::Classify(bytes);

  size_t needed = 0;
  auto hello = tollgate::analysis::ReadTlsClientHello(bytes, &needed);
  CheckError(hello, needed, size);
  if (hello) {
    if (hello->server_name.size() > 255 || hello->server_name.find(':') != std::string::npos) {
      __builtin_trap();
    }
    CheckName(hello->server_name);
    if (hello->alpn.size() > tollgate::analysis::kMaxAlpnProtocols) __builtin_trap();
  }

  needed = 0;
  auto host = tollgate::analysis::ReadHttpHost(bytes, &needed);
  CheckError(host, needed, size);
  if (host) {
    if (host->empty()) __builtin_trap();
    CheckName(*host);
  }
  return 0;
}
