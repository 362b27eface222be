// Large domain blocklists: the `list` condition of a rule ("deny anything in the ads list").
// tollgated loads each configured list once at start-up or reload with Blocklist::LoadFile and
// shares the immutable result between the rule table and every thread deciding verdicts, which
// call Match for each name of a flow (the resolved name, the TLS SNI, the HTTP Host).
//
// Format, one file may mix both forms:
//   0.0.0.0 ads.example.com           hosts format: an IP address, then one or more names
//   127.0.0.1 a.example b.example     (any valid IPv4/IPv6 address; the address itself is ignored)
//   tracker.example.net               one name per line
//   # comment                         whole-line or trailing `#` comments, blank lines, CRLF
// An entry matches the name itself and all its subdomains: `example.com` blocks
// `a.b.example.com`, not `badexample.com`. Names are case-insensitive and a trailing dot is
// ignored. The placeholders that hosts files carry (`localhost`, `broadcasthost`, `local`,
// `ip6-*`, addresses written as names) are skipped and counted as junk: listing them would block
// the machine's own names.
//
// A malformed name (a character other than letters, digits, '-', '_' and '.', such as a `*`
// wildcard or non-ASCII where punycode belongs; a label over 63 bytes; a name over 253; an empty
// label; an all-digit last label) or a hosts line whose address does not parse is skipped (the
// other names of that line are kept), counted, and the first few are reported as
// `file:line:col: message`. Lists come from third parties and are messy; refusing a
// million-line list for one bad line would leave the user with no list at all, which is worse
// than a list with one line missing and a warning saying which. Only an unreadable file or one
// over kBlocklistMaxBytes is an Error.
//
// Memory and speed (measured by `scripts/bench analysis`): all names live back to back in one
// arena, and an open-addressing table of 8-byte slots (arena offset; name length and 24 bits of
// its hash) points into it. The hash runs over a name from its last byte to its first, so
// one right-to-left pass over a looked-up host yields the hash of every parent suffix; a 5-label
// host costs 5 table probes, not 5 hashes of growing strings. A hit is confirmed by comparing the
// stored bytes, so hashing never causes a false positive. Memory: the name bytes plus about 12
// bytes per entry; the file buffer is released when the load returns.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace tollgate::analysis {

class BlocklistBuilder;

// The largest list file or text accepted. Lists in the wild reach a few million names (~100 MB);
// the bound keeps every arena offset within 32 bits with room to spare.
inline constexpr size_t kBlocklistMaxBytes = size_t{512} << 20;
// How many problems a load report quotes; the rest are only counted.
inline constexpr size_t kBlocklistMaxReportedProblems = 10;

// What a load found besides the entries themselves, for the daemon's log and `--json` status.
struct BlocklistLoadReport {
  size_t entries = 0;       // distinct names in the list
  size_t duplicates = 0;    // names listed again (also with other case or a trailing dot)
  size_t skipped_junk = 0;  // localhost and friends, addresses written as names
  size_t invalid = 0;       // malformed names, or whole lines when the line cannot be read
  // The first kBlocklistMaxReportedProblems of those, `file:line:col: what is wrong`, in file
  // order, with the offending text quoted.
  std::vector<std::string> problems;
};

// An immutable set of domain suffixes. Safe to query from many threads at once.
class Blocklist {
 public:
  // Parses list text. `name` is the list's name in the configuration (what rules refer to);
  // `source_name` is what problems are reported against (the file path). Errors: kTooLarge when
  // `text` is over kBlocklistMaxBytes. An empty or all-junk text gives an empty list.
  static Expected<std::shared_ptr<const Blocklist>> Parse(std::string_view text, std::string name,
                                                          const std::string& source_name,
                                                          BlocklistLoadReport* report = nullptr);

  // Reads and parses the regular file `path`. Errors name the path: kNotFound when it is absent,
  // kTooLarge over kBlocklistMaxBytes, kSystem / kInvalidArgument when it cannot be read.
  static Expected<std::shared_ptr<const Blocklist>> LoadFile(const std::string& path,
                                                             std::string name,
                                                             BlocklistLoadReport* report = nullptr);

  // `host` as the DNS parser, the SNI reader and the Host reader return it: lowercase, no trailing
  // dot (other spellings simply do not match). Returns the listed entry that matched, the host
  // itself or else its closest listed parent, as a view into this list's storage (valid while the
  // list lives), or nullopt. Never allocates; any bytes are safe, including "" and overlong input.
  std::optional<std::string_view> Match(std::string_view host) const;

  const std::string& name() const { return name_; }
  size_t size() const { return entries_; }

 private:
  friend class BlocklistBuilder;
  static constexpr size_t kHashPositions = 256;  // a weight per byte position; names <= 253
  struct Slot {
    uint32_t offset;  // of the entry's first byte in arena_
    // length << 24 | 24 bits of the entry's hash, checked before touching the arena. Entries are
    // never empty, so 0 marks a free slot.
    uint32_t tag;
  };
  // Both buffers come from malloc: the arena is shrunk in place with realloc once its size is
  // known, and the table is aligned for huge pages.
  struct FreeMemory {
    void operator()(void* p) const { std::free(p); }
  };

  Blocklist() = default;

  std::string name_;
  std::unique_ptr<char, FreeMemory> arena_;  // lowercase entries back to back, no separators
  std::unique_ptr<Slot, FreeMemory> slots_;  // open addressing, linear probing, load <= 2/3
  size_t capacity_ = 0;                      // slots
  size_t entries_ = 0;
  size_t longest_ = 0;  // longest entry; no longer suffix of a host needs probing
  std::array<uint64_t, kHashPositions> hash_weights_{};  // per list, see blocklist.cc
};

}  // namespace tollgate::analysis
