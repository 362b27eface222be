// Reads what codesign embedded in a Mach-O executable, without an Apple SDK: for each
// architecture slice of a thin or universal ("fat") binary, follow LC_CODE_SIGNATURE to the
// embedded-signature SuperBlob and take the entitlements blob (XML plist) and, from the
// CodeDirectory, the signing identifier and team ID. `tollgate macos check` calls it for the app,
// extension and daemon executables. The bytes may come from anywhere (a download, a CI artifact),
// so every offset and length is bound-checked against the buffer and nothing is trusted.
//
// Layout (all from Apple's published headers <mach-o/loader.h>, <mach-o/fat.h> and the code
// signing format in TN3126/cs_blobs.h): Mach-O headers and load commands are in the slice's byte
// order; fat headers and every code-signature structure are big-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace tollgate::macos {

inline constexpr uint32_t kFatMagic = 0xcafebabe;
inline constexpr uint32_t kFatMagic64 = 0xcafebabf;
inline constexpr uint32_t kMachMagic32 = 0xfeedface;
inline constexpr uint32_t kMachMagic64 = 0xfeedfacf;
inline constexpr uint32_t kLcCodeSignature = 0x1d;
inline constexpr uint32_t kCsMagicEmbeddedSignature = 0xfade0cc0;  // the SuperBlob
inline constexpr uint32_t kCsMagicCodeDirectory = 0xfade0c02;
inline constexpr uint32_t kCsMagicEmbeddedEntitlements = 0xfade7171;
inline constexpr uint32_t kCsSlotCodeDirectory = 0;
inline constexpr uint32_t kCsSlotEntitlements = 5;

// Bounds: real universal binaries have 2-4 slices; Java class files share the fat magic and have
// a "slice count" of 45 or more, which this bound rejects with a clear message.
inline constexpr uint32_t kMaxFatSlices = 16;
inline constexpr uint32_t kMaxLoadCommands = 4096;
inline constexpr uint32_t kMaxSuperBlobEntries = 64;

struct SliceSignature {
  uint32_t cpu_type = 0;
  uint32_t cpu_subtype = 0;
  uint64_t offset = 0;                          // of the slice in the file
  bool has_signature = false;                   // an LC_CODE_SIGNATURE was present
  std::optional<std::string> entitlements_xml;  // payload of the 0xfade7171 blob
  std::optional<std::string> identifier;        // CodeDirectory signing identifier
  std::optional<std::string> team_id;           // CodeDirectory team ID (version >= 0x20200)
};

// True when the first bytes carry a Mach-O or fat magic (either byte order).
bool LooksLikeMachO(std::span<const uint8_t> bytes);

// One SliceSignature per architecture (one for a thin binary). Errors are kMalformed or
// kTooLarge and name the structure and byte offset that failed.
Expected<std::vector<SliceSignature>> ReadMachOSignatures(std::span<const uint8_t> file);

// "arm64", "x86_64", ... or "cpu 0x..." for names this reader does not know.
std::string CpuTypeName(uint32_t cpu_type);

}  // namespace tollgate::macos
