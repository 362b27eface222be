// Tollgate's netfilter ruleset: renders the iptables chains that send new flows to NFQUEUE and keep
// decided flows in the kernel, and installs or removes them atomically with iptables-restore
// (ip6tables-restore for IPv6). tollgate-filter calls Install() at start (which first clears the
// leftovers of a crashed run) and Remove() at exit; `tollgate status` can call Installed(). The
// filter also uses MarkLayout to turn a verdict into the packet mark it hands back with NF_REPEAT.
// The chain design is described at the top of iptables.cc and in docs/filter-chains.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/flow.h"

namespace tollgate::platform {

enum class IpFamily : uint8_t { kIpv4, kIpv6 };

// Which iptables flavour programs the kernel. Both can be active at once in one kernel, which is
// why Install() and Remove() also sweep Tollgate leftovers from the other one.
enum class IptablesBackend : uint8_t {
  kAuto,           // TOLLGATE_IPTABLES_BACKEND (legacy|nft|default), else kSystemDefault
  kSystemDefault,  // iptables-restore / iptables-save as Debian's alternatives point them
  kNft,     // iptables-nft-restore: nf_tables with xt compat (what the default is on Debian 12)
  kLegacy,  // iptables-legacy-restore: the old ip_tables/ip6_tables kernel interface
};

// Resolves kAuto from the environment; an unknown value is an error rather than a silent default.
Expected<IptablesBackend> ResolveBackend(IptablesBackend backend);
const char* BackendName(IptablesBackend backend);

inline constexpr std::string_view kChainPrefix = "TOLLGATE-";
inline constexpr std::string_view kChainOut = "TOLLGATE-OUT";        // mangle, from OUTPUT
inline constexpr std::string_view kChainIn = "TOLLGATE-IN";          // mangle, from INPUT
inline constexpr std::string_view kChainReject = "TOLLGATE-REJECT";  // filter, from INPUT+OUTPUT

// The default mark field: three bits well away from the low bits that Kubernetes (0x4000, 0x8000),
// WireGuard (0xca6c) and Docker use. Configurable when a host already uses them.
inline constexpr uint32_t kDefaultMarkMask = 0x00700000;

// What the mark field (packet mark and conntrack mark, same bits) means. Values are multiples of
// the mask's lowest bit.
enum class MarkValue : uint8_t {
  kNone = 0,     // no verdict yet
  kAllow = 1,    // ctmark: flow allowed, the kernel passes it
  kDeny = 2,     // ctmark: flow denied, the kernel drops it
  kReject = 3,   // ctmark: flow rejected, the filter table answers with TCP RST / ICMP
  kInspect = 4,  // ctmark: handshake allowed, client-side packets still go to the queue
  kPass = 5,     // packet mark only: let this one packet through, record nothing
  kObserve = 6,  // packet mark only: set by the chain on DNS replies queued as observations
};

struct MarkLayout {
  uint32_t mask = kDefaultMarkMask;

  // The mask must be one run of at least 3 contiguous bits.
  static Expected<MarkLayout> FromMask(uint32_t mask);

  uint32_t Value(MarkValue v) const { return static_cast<uint32_t>(v) * (mask & (~mask + 1)); }
  // Reads the field of a queued packet's mark (QueuedPacket::mark); 7 reads as kNone.
  MarkValue Classify(uint32_t mark) const;
  // The mark to give a packet released with NF_REPEAT: the field set to `v`, other bits (someone
  // else's) kept. The packet re-enters our chain, which stores allow/deny/reject/inspect on the
  // conntrack entry and acts on it. Never repeat a packet with its field still kNone or kObserve:
  // it would match the queue rule again and loop through userspace.
  uint32_t ReleaseMark(uint32_t packet_mark, MarkValue v) const {
    return (packet_mark & ~mask) | Value(v);
  }
  static MarkValue ForAction(Action action);
};

struct RulesetOptions {
  // NFQUEUE numbers; first == last gives --queue-num, a range gives --queue-balance. The kernel
  // spreads by a hash of the address pair and protocol, not the ports: both directions of a flow
  // meet the same reader, and all loopback traffic (127.0.0.1 both ends) lands on one queue.
  uint16_t queue_first = 0;
  uint16_t queue_last = 0;
  // --queue-bypass on the decision rules: with no reader bound, packets pass instead of dropping.
  // DNS observations always bypass: they are never worth holding a reply for.
  bool fail_open = true;
  bool inbound = false;  // also queue new flows that arrive from outside (INPUT)
  bool ipv6 = true;      // ip6tables too
  uint32_t mark_mask = kDefaultMarkMask;
  // Interface names (iptables syntax, trailing '+' is a wildcard) whose traffic we never touch.
  std::vector<std::string> excluded_interfaces;
  IptablesBackend backend = IptablesBackend::kAuto;
};

Status ValidateRulesetOptions(const RulesetOptions& options);

// The iptables-restore --noflush input that creates our chains and jump rules for one family,
// exactly as iptables-save prints the rules back. No cleanup lines: Install() adds those.
Expected<std::string> RenderRuleset(IpFamily family, const RulesetOptions& options);

// Removes every Tollgate chain and every rule jumping to one (duplicates included, from any table,
// in both backends), then applies the ruleset; cleanup and install run in one iptables-restore
// transaction per family. If IPv6 fails after IPv4 went in, IPv4 is removed again.
Status Install(const RulesetOptions& options);

// Removes everything Tollgate from both families (and leftovers in the other backend).
Status Remove(IptablesBackend backend = IptablesBackend::kAuto);

// True when any Tollgate chain exists in either family of the backend.
Expected<bool> Installed(IptablesBackend backend = IptablesBackend::kAuto);

// iptables-save / ip6tables-save output of the backend (all tables).
Expected<std::string> SaveRules(IpFamily family, IptablesBackend backend = IptablesBackend::kAuto);

}  // namespace tollgate::platform
