// Fuzzes the Mach-O code-signature reader: any byte string must be refused with a message or read
// into slices whose strings lie inside the input (no crash, no over-read, no endless loop), and
// the entitlements it yields must be safe to hand to the plist parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "macos/macho.h"
#include "macos/plist.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tollgate::macos;
  auto slices = ReadMachOSignatures(std::span(data, size));
  if (!slices) {
    if (slices.error().message.empty()) __builtin_trap();
    return 0;
  }
  if (slices->empty() || slices->size() > kMaxFatSlices) __builtin_trap();
  for (const SliceSignature& s : *slices) {
    if (s.offset >= size) __builtin_trap();
    if (s.entitlements_xml) {
      if (s.entitlements_xml->size() > size) __builtin_trap();
      auto plist = ParsePlist(*s.entitlements_xml, "fuzz");
      if (plist) (void)plist->Ref().Keys();
    }
    if (s.identifier && s.identifier->size() > size) __builtin_trap();
  }
  return 0;
}
