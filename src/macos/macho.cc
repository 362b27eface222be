#include "macos/macho.h"

#include <cstdio>
#include <set>

namespace tollgate::macos {
namespace {

constexpr uint32_t kMachCigam32 = 0xcefaedfe;  // a big-endian Mach-O read little-endian
constexpr uint32_t kMachCigam64 = 0xcffaedfe;
constexpr size_t kMachHeader32Bytes = 28;
constexpr size_t kMachHeader64Bytes = 32;
constexpr size_t kFatArchBytes = 20;
constexpr size_t kFatArch64Bytes = 32;
constexpr size_t kBlobHeaderBytes = 8;         // magic, length
constexpr size_t kSuperBlobHeaderBytes = 12;   // magic, length, count
constexpr size_t kCodeDirectoryMinBytes = 44;  // through spare2
constexpr uint32_t kCodeDirectoryTeamVersion = 0x20200;

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

Unexpected Malformed(const std::string& what, uint64_t offset) {
  return Unexpected(ErrorCode::kMalformed, "Mach-O: " + what + " (at byte " + Hex(offset) + ")");
}

// A bounds-checked window on the file: every read names its offset relative to `base`.
class Bytes {
 public:
  Bytes(std::span<const uint8_t> data, uint64_t base) : data_(data), base_(base) {}
  size_t size() const { return data_.size(); }
  uint64_t base() const { return base_; }
  bool Has(uint64_t offset, uint64_t length) const {
    return offset <= data_.size() && length <= data_.size() - offset;
  }
  uint32_t Be32(size_t off) const {
    return (uint32_t{data_[off]} << 24) | (uint32_t{data_[off + 1]} << 16) |
           (uint32_t{data_[off + 2]} << 8) | uint32_t{data_[off + 3]};
  }
  uint32_t Le32(size_t off) const {
    return uint32_t{data_[off]} | (uint32_t{data_[off + 1]} << 8) |
           (uint32_t{data_[off + 2]} << 16) | (uint32_t{data_[off + 3]} << 24);
  }
  uint64_t Be64(size_t off) const { return (uint64_t{Be32(off)} << 32) | Be32(off + 4); }
  Bytes Sub(uint64_t offset, uint64_t length) const {
    return Bytes(data_.subspan(offset, length), base_ + offset);
  }
  std::span<const uint8_t> span() const { return data_; }

 private:
  std::span<const uint8_t> data_;
  uint64_t base_;
};

// A NUL-terminated string at `offset` inside `blob`; it must end inside the blob.
std::optional<std::string> CString(const Bytes& blob, uint64_t offset) {
  if (offset == 0 || offset >= blob.size()) return std::nullopt;
  auto s = blob.span().subspan(offset);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == 0) return std::string(reinterpret_cast<const char*>(s.data()), i);
  }
  return std::nullopt;
}

Status ReadCodeDirectory(const Bytes& cd, SliceSignature& out) {
  if (cd.size() < kCodeDirectoryMinBytes) {
    return Malformed("CodeDirectory of " + std::to_string(cd.size()) + " bytes is too short",
                     cd.base());
  }
  uint32_t version = cd.Be32(8);
  uint32_t ident_offset = cd.Be32(20);
  out.identifier = CString(cd, ident_offset);
  if (!out.identifier) {
    return Malformed("CodeDirectory identifier offset " + Hex(ident_offset) +
                         " is outside the CodeDirectory or not NUL-terminated",
                     cd.base());
  }
  if (version >= kCodeDirectoryTeamVersion && cd.Has(48, 4)) {
    uint32_t team_offset = cd.Be32(48);
    if (team_offset != 0) {
      out.team_id = CString(cd, team_offset);
      if (!out.team_id) {
        return Malformed("CodeDirectory team ID offset " + Hex(team_offset) +
                             " is outside the CodeDirectory or not NUL-terminated",
                         cd.base());
      }
    }
  }
  return {};
}

Status ReadSuperBlob(const Bytes& sig, SliceSignature& out) {
  if (!sig.Has(0, kSuperBlobHeaderBytes)) {
    return Malformed("code signature of " + std::to_string(sig.size()) +
                         " bytes is too short for a SuperBlob header",
                     sig.base());
  }
  uint32_t magic = sig.Be32(0);
  if (magic != kCsMagicEmbeddedSignature) {
    return Malformed("code signature magic " + Hex(magic) + " is not an embedded signature (" +
                         Hex(kCsMagicEmbeddedSignature) + ")",
                     sig.base());
  }
  uint32_t length = sig.Be32(4);
  if (length < kSuperBlobHeaderBytes || length > sig.size()) {
    return Malformed("SuperBlob length " + std::to_string(length) +
                         " does not fit the LC_CODE_SIGNATURE size " + std::to_string(sig.size()),
                     sig.base() + 4);
  }
  Bytes super = sig.Sub(0, length);
  uint32_t count = super.Be32(8);
  if (count > kMaxSuperBlobEntries || !super.Has(kSuperBlobHeaderBytes, uint64_t{count} * 8)) {
    return Malformed("SuperBlob claims " + std::to_string(count) + " entries", super.base() + 8);
  }
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < count; ++i) {
    size_t at = kSuperBlobHeaderBytes + size_t{i} * 8;
    uint32_t type = super.Be32(at);
    uint32_t offset = super.Be32(at + 4);
    if (type != kCsSlotCodeDirectory && type != kCsSlotEntitlements) continue;
    if (!seen.insert(type).second) {
      return Malformed("SuperBlob has two entries for slot " + std::to_string(type),
                       super.base() + at);
    }
    if (!super.Has(offset, kBlobHeaderBytes)) {
      return Malformed("blob offset " + Hex(offset) + " of slot " + std::to_string(type) +
                           " is outside the SuperBlob",
                       super.base() + at + 4);
    }
    uint32_t blob_magic = super.Be32(offset);
    uint32_t blob_length = super.Be32(offset + 4);
    if (blob_length < kBlobHeaderBytes || !super.Has(offset, blob_length)) {
      return Malformed("blob length " + std::to_string(blob_length) + " of slot " +
                           std::to_string(type) + " runs past the SuperBlob",
                       super.base() + offset + 4);
    }
    Bytes blob = super.Sub(offset, blob_length);
    if (type == kCsSlotEntitlements) {
      if (blob_magic != kCsMagicEmbeddedEntitlements) {
        return Malformed("entitlements slot holds magic " + Hex(blob_magic) + ", expected " +
                             Hex(kCsMagicEmbeddedEntitlements),
                         blob.base());
      }
      auto payload = blob.span().subspan(kBlobHeaderBytes);
      out.entitlements_xml.emplace(reinterpret_cast<const char*>(payload.data()), payload.size());
    } else {
      if (blob_magic != kCsMagicCodeDirectory) {
        return Malformed("CodeDirectory slot holds magic " + Hex(blob_magic) + ", expected " +
                             Hex(kCsMagicCodeDirectory),
                         blob.base());
      }
      if (Status s = ReadCodeDirectory(blob, out); !s) return Unexpected(s.error());
    }
  }
  return {};
}

Expected<SliceSignature> ReadThin(const Bytes& slice) {
  if (!slice.Has(0, kMachHeader32Bytes)) {
    return Malformed(
        "file of " + std::to_string(slice.size()) + " bytes is too short for a Mach-O header",
        slice.base());
  }
  uint32_t raw = slice.Le32(0);
  bool big_endian = raw == kMachCigam32 || raw == kMachCigam64;
  bool is64 = raw == kMachMagic64 || raw == kMachCigam64;
  if (raw != kMachMagic32 && raw != kMachMagic64 && !big_endian) {
    return Malformed("magic " + Hex(raw) + " is not a Mach-O magic", slice.base());
  }
  auto u32 = [&](size_t off) { return big_endian ? slice.Be32(off) : slice.Le32(off); };
  size_t header_bytes = is64 ? kMachHeader64Bytes : kMachHeader32Bytes;
  if (!slice.Has(0, header_bytes)) {
    return Malformed("file too short for a 64-bit Mach-O header", slice.base());
  }
  SliceSignature out;
  out.cpu_type = u32(4);
  out.cpu_subtype = u32(8);
  out.offset = slice.base();
  uint32_t ncmds = u32(16);
  uint32_t sizeofcmds = u32(20);
  if (ncmds > kMaxLoadCommands) {
    return Malformed("header claims " + std::to_string(ncmds) + " load commands",
                     slice.base() + 16);
  }
  if (!slice.Has(header_bytes, sizeofcmds)) {
    return Malformed(
        "load commands (" + std::to_string(sizeofcmds) + " bytes) run past the end of the slice",
        slice.base() + 20);
  }
  Bytes cmds = slice.Sub(header_bytes, sizeofcmds);
  uint64_t at = 0;
  for (uint32_t i = 0; i < ncmds; ++i) {
    if (!cmds.Has(at, 8)) {
      return Malformed("load command " + std::to_string(i) + " starts past sizeofcmds",
                       cmds.base() + at);
    }
    uint32_t cmd = big_endian ? cmds.Be32(at) : cmds.Le32(at);
    uint32_t cmdsize = big_endian ? cmds.Be32(at + 4) : cmds.Le32(at + 4);
    if (cmdsize < 8 || cmdsize % 4 != 0 || !cmds.Has(at, cmdsize)) {
      return Malformed("load command " + std::to_string(i) + " has size " + std::to_string(cmdsize),
                       cmds.base() + at + 4);
    }
    if (cmd == kLcCodeSignature) {
      if (out.has_signature) return Malformed("two LC_CODE_SIGNATURE commands", cmds.base() + at);
      if (cmdsize < 16) {
        return Malformed("LC_CODE_SIGNATURE of " + std::to_string(cmdsize) + " bytes",
                         cmds.base() + at);
      }
      uint32_t dataoff = big_endian ? cmds.Be32(at + 8) : cmds.Le32(at + 8);
      uint32_t datasize = big_endian ? cmds.Be32(at + 12) : cmds.Le32(at + 12);
      if (!slice.Has(dataoff, datasize)) {
        return Malformed("LC_CODE_SIGNATURE points at " + Hex(dataoff) + "+" +
                             std::to_string(datasize) + ", outside the slice of " +
                             std::to_string(slice.size()) + " bytes",
                         cmds.base() + at + 8);
      }
      out.has_signature = true;
      if (Status s = ReadSuperBlob(slice.Sub(dataoff, datasize), out); !s) {
        return Unexpected(s.error());
      }
    }
    at += cmdsize;
  }
  return out;
}

}  // namespace

bool LooksLikeMachO(std::span<const uint8_t> bytes) {
  if (bytes.size() < 4) return false;
  Bytes b(bytes, 0);
  uint32_t be = b.Be32(0);
  uint32_t le = b.Le32(0);
  return be == kFatMagic || be == kFatMagic64 || le == kMachMagic32 || le == kMachMagic64 ||
         le == kMachCigam32 || le == kMachCigam64;
}

Expected<std::vector<SliceSignature>> ReadMachOSignatures(std::span<const uint8_t> file) {
  Bytes all(file, 0);
  if (!all.Has(0, 8)) {
    return Malformed("file of " + std::to_string(file.size()) + " bytes is too short", 0);
  }
  uint32_t magic = all.Be32(0);
  std::vector<SliceSignature> slices;
  if (magic != kFatMagic && magic != kFatMagic64) {
    auto thin = ReadThin(all);
    if (!thin) return Unexpected(thin.error());
    slices.push_back(std::move(*thin));
    return slices;
  }
  bool fat64 = magic == kFatMagic64;
  uint32_t nfat = all.Be32(4);
  if (nfat == 0 || nfat > kMaxFatSlices) {
    return Malformed("universal header claims " + std::to_string(nfat) +
                         " architectures (a Java class file has the same magic)",
                     4);
  }
  size_t arch_bytes = fat64 ? kFatArch64Bytes : kFatArchBytes;
  if (!all.Has(8, uint64_t{nfat} * arch_bytes)) {
    return Malformed("universal header's architecture table runs past the end of the file", 8);
  }
  for (uint32_t i = 0; i < nfat; ++i) {
    size_t at = 8 + size_t{i} * arch_bytes;
    uint64_t offset = fat64 ? all.Be64(at + 8) : all.Be32(at + 8);
    uint64_t size = fat64 ? all.Be64(at + 16) : all.Be32(at + 12);
    if (offset < 8 + uint64_t{nfat} * arch_bytes || !all.Has(offset, size)) {
      return Malformed("architecture " + std::to_string(i) + " claims bytes " + Hex(offset) + "+" +
                           std::to_string(size) + ", outside the file of " +
                           std::to_string(file.size()) + " bytes",
                       at + 8);
    }
    auto thin = ReadThin(all.Sub(offset, size));
    if (!thin) return Unexpected(thin.error());
    slices.push_back(std::move(*thin));
  }
  return slices;
}

std::string CpuTypeName(uint32_t cpu_type) {
  switch (cpu_type) {
    case 7:
      return "i386";
    case 0x01000007:
      return "x86_64";
    case 12:
      return "arm";
    case 0x0100000c:
      return "arm64";
    case 0x0200000c:
      return "arm64_32";
    case 18:
      return "ppc";
    case 0x01000012:
      return "ppc64";
    default:
      return "cpu " + Hex(cpu_type);
  }
}

}  // namespace tollgate::macos
