#include "macos/plist.h"

#include <cstdlib>
#include <cstring>

namespace tollgate::macos {
namespace {

// libplist counts dates from the Mac epoch, 2001-01-01T00:00:00Z.
constexpr int64_t kMacEpochUnix = 978307200;

// Upper bound on the nesting of an XML plist, counted from its container tags without parsing,
// so that a hostile file cannot make the parser recurse deeply. Comments and CDATA could hide
// tags from this count only to make it larger, which errs on the safe side.
int XmlNestingBound(std::string_view text) {
  int depth = 0;
  int max_depth = 0;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '<') continue;
    std::string_view rest = text.substr(i + 1);
    bool closing = !rest.empty() && rest[0] == '/';
    if (closing) rest.remove_prefix(1);
    size_t name_len = 0;
    if (rest.starts_with("dict")) {
      name_len = 4;
    } else if (rest.starts_with("array")) {
      name_len = 5;
    } else {
      continue;
    }
    size_t close = rest.find('>', name_len);
    bool self_closing = close != std::string_view::npos && close > 0 && rest[close - 1] == '/';
    if (self_closing) continue;
    if (closing) {
      if (depth > 0) --depth;
    } else {
      max_depth = std::max(max_depth, ++depth);
    }
  }
  return max_depth;
}

}  // namespace

PlistRef PlistRef::operator[](const std::string& key) const {
  if (Type() != PLIST_DICT) return PlistRef();
  return PlistRef(plist_dict_get_item(node_, key.c_str()));
}

std::vector<std::string> PlistRef::Keys() const {
  std::vector<std::string> keys;
  if (Type() != PLIST_DICT) return keys;
  plist_dict_iter it = nullptr;
  plist_dict_new_iter(node_, &it);
  for (;;) {
    char* key = nullptr;
    plist_t value = nullptr;
    plist_dict_next_item(node_, it, &key, &value);
    if (key == nullptr) break;
    keys.emplace_back(key);
    std::free(key);
  }
  std::free(it);
  return keys;
}

size_t PlistRef::ArraySize() const {
  return Type() == PLIST_ARRAY ? plist_array_get_size(node_) : 0;
}

PlistRef PlistRef::At(size_t index) const {
  if (index >= ArraySize()) return PlistRef();
  return PlistRef(plist_array_get_item(node_, static_cast<uint32_t>(index)));
}

std::optional<std::string> PlistRef::String() const {
  if (Type() != PLIST_STRING) return std::nullopt;
  uint64_t length = 0;
  const char* p = plist_get_string_ptr(node_, &length);
  if (p == nullptr) return std::string();
  // libplist 2.2 keeps the length of the raw XML text but stores the value with strdup, so a
  // string with an embedded NUL is shorter than `length` (found by fuzzing): stop at the NUL.
  return std::string(p, strnlen(p, length));
}

std::optional<bool> PlistRef::Bool() const {
  if (Type() != PLIST_BOOLEAN) return std::nullopt;
  uint8_t v = 0;
  plist_get_bool_val(node_, &v);
  return v != 0;
}

std::optional<int64_t> PlistRef::DateUnix() const {
  if (Type() != PLIST_DATE) return std::nullopt;
  int32_t sec = 0;
  int32_t usec = 0;
  plist_get_date_val(node_, &sec, &usec);
  return static_cast<int64_t>(sec) + kMacEpochUnix;
}

std::vector<std::string> PlistRef::Strings() const {
  std::vector<std::string> out;
  if (auto s = String()) {
    out.push_back(*s);
    return out;
  }
  for (size_t i = 0; i < ArraySize(); ++i) {
    if (auto s = At(i).String()) out.push_back(*s);
  }
  return out;
}

Plist::~Plist() {
  if (node_ != nullptr) plist_free(node_);
}

Plist& Plist::operator=(Plist&& other) noexcept {
  if (this != &other) {
    if (node_ != nullptr) plist_free(node_);
    node_ = other.release();
  }
  return *this;
}

plist_t Plist::release() {
  plist_t n = node_;
  node_ = nullptr;
  return n;
}

Plist Plist::Dict() { return Plist(plist_new_dict()); }
Plist Plist::Array() { return Plist(plist_new_array()); }
Plist Plist::Str(std::string_view value) {
  return Plist(plist_new_string(std::string(value).c_str()));
}
Plist Plist::Bool(bool value) { return Plist(plist_new_bool(value ? 1 : 0)); }
Plist Plist::DateUnix(int64_t seconds) {
  return Plist(plist_new_date(static_cast<int32_t>(seconds - kMacEpochUnix), 0));
}

Plist Plist::StringArray(std::initializer_list<std::string_view> values) {
  Plist a = Array();
  for (std::string_view v : values) a.Append(Str(v));
  return a;
}

Plist Plist::StringArray(const std::vector<std::string>& values) {
  Plist a = Array();
  for (const std::string& v : values) a.Append(Str(v));
  return a;
}

Plist Plist::Copy() const { return Plist(node_ ? plist_copy(node_) : nullptr); }

void Plist::Set(const std::string& key, Plist value) {
  if (Ref().Type() != PLIST_DICT || value.IsNull()) return;
  plist_dict_set_item(node_, key.c_str(), value.release());
}

void Plist::Remove(const std::string& key) {
  if (Ref().Type() != PLIST_DICT) return;
  if (plist_dict_get_item(node_, key.c_str()) != nullptr)
    plist_dict_remove_item(node_, key.c_str());
}

void Plist::Append(Plist value) {
  if (Ref().Type() != PLIST_ARRAY || value.IsNull()) return;
  plist_array_append_item(node_, value.release());
}

std::string Plist::ToXml() const {
  if (node_ == nullptr) return {};
  char* xml = nullptr;
  uint32_t length = 0;
  plist_to_xml(node_, &xml, &length);
  std::string out(xml != nullptr ? xml : "", xml != nullptr ? length : 0);
  if (xml != nullptr) plist_to_xml_free(xml);
  return out;
}

std::vector<uint8_t> Plist::ToBinary() const {
  if (node_ == nullptr) return {};
  char* bin = nullptr;
  uint32_t length = 0;
  plist_to_bin(node_, &bin, &length);
  std::vector<uint8_t> out;
  if (bin != nullptr) {
    out.assign(reinterpret_cast<const uint8_t*>(bin),
               reinterpret_cast<const uint8_t*>(bin) + length);
    plist_to_bin_free(bin);
  }
  return out;
}

Expected<Plist> ParsePlist(std::span<const uint8_t> bytes, std::string_view where) {
  std::string place(where);
  if (bytes.size() > kMaxPlistBytes) {
    return Unexpected(ErrorCode::kTooLarge, place + ": property list of " +
                                                std::to_string(bytes.size()) +
                                                " bytes is over the limit of " +
                                                std::to_string(kMaxPlistBytes) + " bytes");
  }
  if (bytes.empty()) {
    return Unexpected(ErrorCode::kMalformed,
                      place + ": empty file where a property list (XML or binary) was expected");
  }
  const char* data = reinterpret_cast<const char*>(bytes.data());
  auto size = static_cast<uint32_t>(bytes.size());
  plist_t root = nullptr;
  if (plist_is_binary(data, size) != 0) {
    plist_from_bin(data, size, &root);
  } else {
    if (XmlNestingBound(std::string_view(data, bytes.size())) > kMaxPlistDepth) {
      return Unexpected(ErrorCode::kTooLarge, place + ": property list nests more than " +
                                                  std::to_string(kMaxPlistDepth) +
                                                  " levels deep; not a real one");
    }
    plist_from_xml(data, size, &root);
  }
  if (root == nullptr) {
    return Unexpected(ErrorCode::kMalformed,
                      place +
                          ": not a valid XML or binary property list (check it with "
                          "`plutil -lint` on a Mac, or `plistutil -i FILE` here)");
  }
  return Plist(root);
}

Expected<Plist> ParsePlist(std::string_view text, std::string_view where) {
  return ParsePlist(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()), where);
}

}  // namespace tollgate::macos
