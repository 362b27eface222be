#include "analysis/blocklist.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <span>
#include <utility>

#include "common/flow.h"
#include "common/toml_report.h"
#include "common/unique_fd.h"

namespace tollgate::analysis {
namespace {

constexpr size_t kMaxNameBytes = 253;  // RFC 1035 2.3.4 in text form, without a trailing dot
constexpr size_t kMaxLabelBytes = 63;
// A host of at most kMaxNameBytes has at most 127 suffixes worth probing (see Match).
constexpr size_t kMaxProbes = 128;

// Placeholders hosts files carry for the machine itself; blocking them would break it, and a
// list that names them means nothing by it.
constexpr std::array<std::string_view, 11> kJunkNames = {
    "localhost",     "localhost.localdomain", "local",        "broadcasthost",
    "ip6-localhost", "ip6-loopback",          "ip6-localnet", "ip6-mcastprefix",
    "ip6-allnodes",  "ip6-allrouters",        "ip6-allhosts",
};

// The hash of a name is a sum over its bytes, each multiplied by the list's random odd weight for
// its position counted from the name's last byte, put through a murmur3 finaliser. Read from the
// right, every partial sum is the sum of a suffix, so a host's suffixes are hashed in one pass;
// and the sum's only serial step is an add, where a multiply-per-byte chain (FNV) would take
// four cycles a byte. Random per-list weights keep anyone from choosing names that collide.
inline uint64_t Weighted(uint64_t weight, char c) { return weight * static_cast<uint8_t>(c); }

inline uint64_t Finish(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

uint64_t HashName(const uint64_t* weights, const char* name, size_t len) {
  uint64_t h = 0;
  for (size_t p = 0; p < len; ++p) h += Weighted(weights[p], name[len - 1 - p]);
  return Finish(h);
}

// Slot index from the high half of the hash (fastrange, so any capacity works), tag from the low
// half, so the two are independent. The tag word also holds the length: entries are never empty,
// so an all-zero slot is free.
inline size_t IndexOf(uint64_t h, size_t capacity) {
  return static_cast<size_t>(((h >> 32) * static_cast<uint64_t>(capacity)) >> 32);
}

inline uint32_t LenTag(uint64_t h, size_t len) {
  return (static_cast<uint32_t>(len) << 24) | (static_cast<uint32_t>(h) & 0xFFFFFFu);
}

// Load factor <= 2/3: linear probing stays within a cache line or two.
size_t CapacityFor(size_t entries) { return entries + entries / 2 + 16; }

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

bool IsAddress(std::string_view token) {
  if (token == "0.0.0.0" || token == "127.0.0.1" || token == "::" || token == "::1") return true;
  // Link-local addresses in hosts files may carry a zone (`fe80::1%lo0`).
  if (size_t pct = token.find('%');
      pct != std::string_view::npos && pct > 0 && token.find(':') != std::string_view::npos) {
    token = token.substr(0, pct);
  }
  return IpAddress::Parse(token).has_value();
}

// Cheap pre-check so only tokens that could be addresses pay for inet_pton.
bool MayBeAddress(std::string_view token) {
  if (token.find(':') != std::string_view::npos) return true;
  return std::all_of(token.begin(), token.end(),
                     [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

// Large buffers are aligned and advised for transparent huge pages: a lookup's probes land on
// random pages of the table and the arena, and a page walk per probe (dearer still under a
// hypervisor) would cost more than the probe. Released with free(); the arena with realloc.
constexpr size_t kHugePage = size_t{2} << 20;

void* AllocateLarge(size_t bytes) {
  void* p = nullptr;
  if (bytes >= 2 * kHugePage) {
    bytes = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    p = std::aligned_alloc(kHugePage, bytes);
    // Advice only: where THP is off, 4 KiB pages serve as before.
    if (p != nullptr) (void)::madvise(p, bytes, MADV_HUGEPAGE);
  } else {
    p = std::malloc(bytes);
  }
  TG_CHECK(p != nullptr);
  return p;
}

// Not secret, only unpredictable enough: a list crafted against known weights could pile its names
// into one probe run and slow every lookup. Lookups give the same answers for any weights.
void NewWeights(std::span<uint64_t> weights, const void* salt) {
  uint64_t state =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      static_cast<uint64_t>(reinterpret_cast<uintptr_t>(salt));
  for (uint64_t& w : weights) {
    state += 0x9e3779b97f4a7c15ULL;  // splitmix64
    w = Finish(state) | 1;           // odd, so a change at a single position always changes the sum
  }
}

// A file's bytes in a buffer that was never zero-filled: read() writes every byte we use.
struct ListText {
  std::unique_ptr<char[]> bytes;
  size_t size = 0;
};

// Reads the list into a buffer of the size fstat reports (a million-name list is ~30 MB; growing
// a buffer chunk by chunk would copy it several times). Same refusals and messages as
// toml_report::ReadSmallFile.
Expected<ListText> ReadListFile(const std::string& path) {
  const std::string what = "cannot read blocklist " + path;
  // O_NONBLOCK so that a FIFO given by mistake is refused below instead of hanging the load.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    const int err = errno;
    Error error = Error::System(what, err);
    if (err == ENOENT) error.code = ErrorCode::kNotFound;
    return Unexpected(std::move(error));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Unexpected(Error::System(what, errno));
  if (!S_ISREG(st.st_mode)) {
    return Unexpected(ErrorCode::kInvalidArgument, what + ": not a regular file");
  }
  const auto too_large = [&] {
    return Unexpected(ErrorCode::kTooLarge, what + ": larger than " +
                                                std::to_string(kBlocklistMaxBytes) +
                                                " bytes; split it into several lists");
  };
  if (static_cast<uint64_t>(st.st_size) > kBlocklistMaxBytes) return too_large();
  // One byte of room past the size, so the read that sees end-of-file needs no reallocation.
  size_t capacity = static_cast<size_t>(st.st_size) + 1;
  ListText text{std::make_unique_for_overwrite<char[]>(capacity), 0};
  size_t& got = text.size;
  for (;;) {
    if (got == capacity) {  // the file grew while we read it
      if (got > kBlocklistMaxBytes) return too_large();
      capacity = std::min(got * 2, kBlocklistMaxBytes + 1);
      auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
      std::memcpy(bigger.get(), text.bytes.get(), got);
      text.bytes = std::move(bigger);
    }
    const ssize_t n = ::read(fd.get(), text.bytes.get() + got, capacity - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unexpected(Error::System(what, errno));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > kBlocklistMaxBytes) return too_large();
  return text;
}

}  // namespace

// Builds the arena and the table in one pass over the text.
class BlocklistBuilder {
 public:
  BlocklistBuilder(std::string_view source, size_t expected_names, size_t text_bytes,
                   BlocklistLoadReport* report)
      : source_(source), report_(report) {
    list_.reset(new Blocklist());
    NewWeights(list_->hash_weights_, &expected_names);
    // Names are copied from the text without their separators, so the arena never needs more
    // than the text; reserved pages that are never written cost no memory.
    arena_ = static_cast<char*>(AllocateLarge(text_bytes + 1));
    list_->arena_.reset(arena_);
    Resize(CapacityFor(expected_names));
  }

  void ParseLine(std::string_view line, size_t line_no) {
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    size_t pos = 0;
    const std::string_view first = NextToken(line, pos);
    if (first.empty()) return;
    const size_t first_col = pos - first.size() + 1;
    std::string_view token = NextToken(line, pos);
    if (token.empty()) {
      AddName(first, line_no, first_col);
      return;
    }
    if (!IsAddress(first)) {
      Problem(line_no, first_col,
              toml_report::Quote(first) +
                  " is not an IP address; a line is either one domain name, or an address "
                  "(e.g. 0.0.0.0) followed by names");
      return;
    }
    while (!token.empty()) {
      AddName(token, line_no, pos - token.size() + 1);
      token = NextToken(line, pos);
    }
  }

  std::shared_ptr<const Blocklist> Build(std::string name) {
    Flush();
    // The table was sized from the line count; comments and junk may have left it far larger
    // than the entries need.
    if (list_->capacity_ > CapacityFor(entries_) + CapacityFor(entries_) / 4) {
      Resize(CapacityFor(entries_));
    }
    // glibc shrinks in place (splitting the chunk or mremap), so the reserve is returned without
    // copying the names.
    char* shrunk = static_cast<char*>(std::realloc(arena_, arena_size_ + 1));
    if (shrunk != nullptr) {
      (void)list_->arena_.release();
      list_->arena_.reset(shrunk);
    }
    list_->name_ = std::move(name);
    list_->entries_ = entries_;
    list_->longest_ = longest_;
    report_->entries = entries_;
    return std::shared_ptr<const Blocklist>(std::move(list_));
  }

 private:
  using Slot = Blocklist::Slot;
  static_assert(kMaxNameBytes <= Blocklist::kHashPositions);

  // Names waiting for insertion. Their slots are prefetched together, so the cache misses of a
  // batch overlap instead of costing one memory latency per name.
  struct Pending {
    uint32_t offset;
    uint32_t len;
    uint64_t hash;
  };
  static constexpr size_t kBatch = 16;

  static std::string_view NextToken(std::string_view line, size_t& pos) {
    while (pos < line.size() && IsSpace(line[pos])) ++pos;
    const size_t start = pos;
    while (pos < line.size() && !IsSpace(line[pos])) ++pos;
    return line.substr(start, pos - start);
  }

  void Problem(size_t line_no, size_t col, std::string message) {
    ++report_->invalid;
    if (report_->problems.size() < kBlocklistMaxReportedProblems) {
      report_->problems.push_back(std::string(source_) + ":" + std::to_string(line_no) + ":" +
                                  std::to_string(col) + ": " + std::move(message));
    }
  }

  // Validates `token` (at 1-based column `col`) and lowercases it onto the end of the arena;
  // it is inserted, or found to be a duplicate, with the batch it joins.
  void AddName(std::string_view token, size_t line_no, size_t col) {
    if (MayBeAddress(token) && IsAddress(token)) {
      ++report_->skipped_junk;
      return;
    }
    std::string_view name = token;
    if (name.size() > 1 && name.back() == '.') name.remove_suffix(1);
    if (name.size() > kMaxNameBytes) {
      return Problem(line_no, col,
                     "name " + toml_report::Quote(token) + " is " + std::to_string(name.size()) +
                         " bytes long; DNS allows at most " + std::to_string(kMaxNameBytes));
    }
    char* const out = arena_ + arena_size_;
    size_t label_start = 0;
    bool numeric_label = true;  // whether the last label so far is all digits
    for (size_t i = 0; i < name.size(); ++i) {
      const char c = name[i];
      if (c == '.') {
        if (i == label_start) {
          return Problem(line_no, col + i,
                         "name " + toml_report::Quote(token) + " has an empty label");
        }
        if (i - label_start > kMaxLabelBytes) return LongLabel(token, line_no, col, label_start, i);
        out[i] = '.';
        label_start = i + 1;
        numeric_label = true;
        continue;
      }
      const bool digit = c >= '0' && c <= '9';
      numeric_label = numeric_label && digit;
      if ((c >= 'a' && c <= 'z') || digit || c == '-' || c == '_') {
        out[i] = c;
      } else if (c >= 'A' && c <= 'Z') {
        out[i] = static_cast<char>(c - 'A' + 'a');
      } else {
        return Problem(line_no, col + i, BadCharacter(token, c));
      }
    }
    if (label_start == name.size()) {  // "a.." less its trailing dot ends in an empty label
      return Problem(line_no, col + label_start,
                     "name " + toml_report::Quote(token) + " has an empty label");
    }
    if (name.size() - label_start > kMaxLabelBytes) {
      return LongLabel(token, line_no, col, label_start, name.size());
    }
    const std::string_view stored(out, name.size());
    if (std::find(kJunkNames.begin(), kJunkNames.end(), stored) != kJunkNames.end()) {
      ++report_->skipped_junk;
      return;
    }
    if (numeric_label) {
      // No top-level domain is all digits (RFC 3696 2), so this is a mistyped address.
      return Problem(line_no, col,
                     toml_report::Quote(token) +
                         " is neither an IP address nor a domain name (its last label is all "
                         "digits)");
    }
    const uint64_t h = HashName(list_->hash_weights_.data(), out, name.size());
    __builtin_prefetch(&slots_[IndexOf(h, list_->capacity_)]);
    pending_[pending_count_++] = {static_cast<uint32_t>(arena_size_),
                                  static_cast<uint32_t>(name.size()), h};
    arena_size_ += name.size();
    if (pending_count_ == kBatch) Flush();
  }

  void LongLabel(std::string_view token, size_t line_no, size_t col, size_t start, size_t end) {
    Problem(line_no, col + start,
            "name " + toml_report::Quote(token) + " has a label of " + std::to_string(end - start) +
                " bytes; DNS allows at most " + std::to_string(kMaxLabelBytes));
  }

  static std::string BadCharacter(std::string_view token, char c) {
    const std::string quoted = toml_report::Quote(token);
    if (c == '*') {
      return "name " + quoted +
             " has a wildcard; list the parent name instead, an entry blocks all its subdomains";
    }
    if (static_cast<uint8_t>(c) >= 0x80) {
      return "name " + quoted +
             " is not ASCII; write internationalized names in punycode (xn--...)";
    }
    return "name " + quoted + " has " + toml_report::Quote(std::string_view(&c, 1)) +
           ", which is not allowed in a domain name (letters, digits, '-', '_' and '.')";
  }

  // Inserts the pending names in order. A duplicate leaves a gap in the arena, which the names
  // after it close by moving down, so duplicates cost no memory.
  void Flush() {
    if (pending_count_ == 0) return;
    if (CapacityFor(entries_ + pending_count_) > list_->capacity_) {
      Resize(CapacityFor(2 * (entries_ + pending_count_)));
    }
    size_t cursor = pending_[0].offset;
    for (size_t p = 0; p < pending_count_; ++p) {
      const Pending& name = pending_[p];
      if (cursor != name.offset) std::memmove(arena_ + cursor, arena_ + name.offset, name.len);
      const uint32_t len_tag = LenTag(name.hash, name.len);
      size_t i = IndexOf(name.hash, list_->capacity_);
      bool duplicate = false;
      for (; slots_[i].tag != 0; i = i + 1 == list_->capacity_ ? 0 : i + 1) {
        if (slots_[i].tag == len_tag &&
            std::memcmp(arena_ + slots_[i].offset, arena_ + cursor, name.len) == 0) {
          duplicate = true;
          break;
        }
      }
      if (duplicate) {
        ++report_->duplicates;
        continue;
      }
      slots_[i] = {static_cast<uint32_t>(cursor), len_tag};
      cursor += name.len;
      ++entries_;
      longest_ = std::max<size_t>(longest_, name.len);
    }
    arena_size_ = cursor;
    pending_count_ = 0;
  }

  // Only the length and 24 bits of the hash are kept, so a new table rehashes the stored names.
  void Resize(size_t capacity) {
    std::unique_ptr<Slot, Blocklist::FreeMemory> old = std::move(list_->slots_);
    const size_t old_capacity = list_->capacity_;
    list_->slots_.reset(static_cast<Slot*>(AllocateLarge(capacity * sizeof(Slot))));
    std::memset(list_->slots_.get(), 0, capacity * sizeof(Slot));
    list_->capacity_ = capacity;
    slots_ = list_->slots_.get();
    for (size_t k = 0; k < old_capacity; ++k) {
      const Slot& s = old.get()[k];
      if (s.tag == 0) continue;
      const uint64_t h = HashName(list_->hash_weights_.data(), arena_ + s.offset, s.tag >> 24);
      size_t i = IndexOf(h, capacity);
      while (slots_[i].tag != 0) i = i + 1 == capacity ? 0 : i + 1;
      slots_[i] = s;
    }
  }

  std::string_view source_;
  BlocklistLoadReport* report_;
  std::unique_ptr<Blocklist> list_;  // owns the buffers below while they grow
  char* arena_ = nullptr;
  size_t arena_size_ = 0;
  Slot* slots_ = nullptr;
  std::array<Pending, kBatch> pending_;
  size_t pending_count_ = 0;
  size_t entries_ = 0;
  size_t longest_ = 0;
};

Expected<std::shared_ptr<const Blocklist>> Blocklist::Parse(std::string_view text, std::string name,
                                                            const std::string& source_name,
                                                            BlocklistLoadReport* report) {
  if (text.size() > kBlocklistMaxBytes) {
    return Unexpected(ErrorCode::kTooLarge,
                      "blocklist " + source_name + " is " + std::to_string(text.size()) +
                          " bytes, over the limit of " + std::to_string(kBlocklistMaxBytes) +
                          "; split it into several lists");
  }
  BlocklistLoadReport local;
  if (report == nullptr) report = &local;
  *report = BlocklistLoadReport{};
  // Most lines hold one name, some hosts lines several: a little over the line count usually
  // avoids growing the table while parsing.
  const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  BlocklistBuilder builder(source_name, lines + lines / 16, text.size(), report);
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t nl = text.find('\n');
    builder.ParseLine(text.substr(0, nl), line_no);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
  }
  return builder.Build(std::move(name));
}

Expected<std::shared_ptr<const Blocklist>> Blocklist::LoadFile(const std::string& path,
                                                               std::string name,
                                                               BlocklistLoadReport* report) {
  auto text = ReadListFile(path);
  if (!text) return Unexpected(text.error());
  return Parse(std::string_view(text->bytes.get(), text->size), std::move(name), path, report);
}

std::optional<std::string_view> Blocklist::Match(std::string_view host) const {
  if (entries_ == 0) return std::nullopt;
  // One pass from the right: after each byte `h` is the unfinished hash of the suffix read so
  // far, and at each label start that suffix is a candidate. Suffixes starting with '.' (an empty
  // label) are never listed, so candidates are two bytes apart at least: kMaxProbes suffices.
  struct Candidate {
    size_t start;
    uint64_t hash;
  };
  std::array<Candidate, kMaxProbes> candidates;
  size_t count = 0;
  const size_t capacity = capacity_;
  const Slot* const slots = slots_.get();
  const size_t n = host.size();
  const size_t stop = n > longest_ ? n - longest_ : 0;
  const uint64_t* const weights = hash_weights_.data();
  uint64_t h = 0;
  for (size_t i = n; i-- > stop;) {
    h += Weighted(weights[n - 1 - i], host[i]);
    if ((i == 0 || host[i - 1] == '.') && host[i] != '.' && count < kMaxProbes) {
      const uint64_t fh = Finish(h);
      // Start every probe's memory load now; they overlap instead of queueing one by one.
      __builtin_prefetch(&slots[IndexOf(fh, capacity)]);
      candidates[count++] = {i, fh};
    }
  }
  // Longest first: the closest listed parent is the most specific reason to report.
  while (count > 0) {
    const Candidate& c = candidates[--count];
    const size_t len = n - c.start;
    const uint32_t len_tag = LenTag(c.hash, len);
    for (size_t i = IndexOf(c.hash, capacity);;) {
      const Slot& slot = slots[i];
      if (slot.tag == 0) break;
      if (slot.tag == len_tag) {
        const char* entry = arena_.get() + slot.offset;
        if (std::memcmp(entry, host.data() + c.start, len) == 0) {
          return std::string_view(entry, len);
        }
      }
      if (++i == capacity) i = 0;
    }
  }
  return std::nullopt;
}

}  // namespace tollgate::analysis
