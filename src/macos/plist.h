// Property lists for the macOS checks and the scaffold: parsing XML and binary plists from
// outside bytes (Info.plists, entitlements, launchd plists, the payload of a provisioning profile)
// with libplist, read-only lookups that never crash on a wrong type, and a few builders the
// scaffold writer and the tests use. Callers: profile.cc, bundle.cc, checks.cc, scaffold.cc.
#pragma once

#include <plist/plist.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace tollgate::macos {

// Real Info.plists and entitlements are a few KiB; profiles a few tens. Anything larger is not one
// of ours, and libplist would allocate the whole tree for it.
inline constexpr size_t kMaxPlistBytes = 4 * 1024 * 1024;
// libplist recurses once per nesting level; real plists nest fewer than 10 levels.
inline constexpr int kMaxPlistDepth = 64;

// A borrowed view of one node (or of nothing). Every lookup on a missing node or a node of the
// wrong type yields an empty result, so checks can chain lookups without testing each step.
class PlistRef {
 public:
  PlistRef() = default;
  explicit PlistRef(plist_t node) : node_(node) {}

  bool IsNull() const { return node_ == nullptr; }
  plist_type Type() const { return node_ ? plist_get_node_type(node_) : PLIST_NONE; }
  plist_t get() const { return node_; }

  // Dictionary lookup; null when this is not a dictionary or the key is absent.
  PlistRef operator[](const std::string& key) const;
  std::vector<std::string> Keys() const;  // dictionary keys, in file order

  size_t ArraySize() const;
  PlistRef At(size_t index) const;

  std::optional<std::string> String() const;
  std::optional<bool> Bool() const;
  // Seconds since the Unix epoch (libplist keeps dates relative to 2001-01-01).
  std::optional<int64_t> DateUnix() const;
  // The strings of an array (other element types are skipped); a lone string gives one element.
  std::vector<std::string> Strings() const;

 private:
  plist_t node_ = nullptr;
};

// An owned plist tree.
class Plist {
 public:
  Plist() = default;
  explicit Plist(plist_t owned) : node_(owned) {}
  ~Plist();
  Plist(Plist&& other) noexcept : node_(other.release()) {}
  Plist& operator=(Plist&& other) noexcept;
  Plist(const Plist&) = delete;
  Plist& operator=(const Plist&) = delete;

  static Plist Dict();
  static Plist Array();
  static Plist Str(std::string_view value);
  static Plist Bool(bool value);
  static Plist DateUnix(int64_t seconds);
  static Plist StringArray(std::initializer_list<std::string_view> values);
  static Plist StringArray(const std::vector<std::string>& values);
  Plist Copy() const;

  PlistRef Ref() const { return PlistRef(node_); }
  PlistRef operator[](const std::string& key) const { return Ref()[key]; }
  plist_t get() const { return node_; }
  plist_t release();
  bool IsNull() const { return node_ == nullptr; }

  // Dictionary edits (no-ops unless this is a dictionary); Set takes ownership of value.
  void Set(const std::string& key, Plist value);
  void Remove(const std::string& key);
  // Array edit (no-op unless this is an array).
  void Append(Plist value);

  std::string ToXml() const;
  std::vector<uint8_t> ToBinary() const;

 private:
  plist_t node_ = nullptr;
};

// Parses an XML or binary plist. `where` names the input (a path) for the error message.
// Errors: kTooLarge over kMaxPlistBytes or kMaxPlistDepth, kMalformed otherwise.
Expected<Plist> ParsePlist(std::span<const uint8_t> bytes, std::string_view where);

// Convenience for text: entitlements XML taken from a code signature.
Expected<Plist> ParsePlist(std::string_view text, std::string_view where);

}  // namespace tollgate::macos
