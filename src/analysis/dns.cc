#include "analysis/dns.h"

#include <cstdio>
#include <string_view>
#include <utility>

namespace tollgate::analysis {
namespace {

constexpr size_t kHeaderBytes = 12;
constexpr size_t kRecordFixedBytes = 10;  // TYPE, CLASS, TTL, RDLENGTH
constexpr uint16_t kTypeA = 1;
constexpr uint16_t kTypeCname = 5;
constexpr uint16_t kTypeAAAA = 28;
constexpr uint16_t kClassIn = 1;

Unexpected Malformed(std::string_view where, size_t offset, std::string_view what) {
  std::string message = "DNS reply: ";
  message.append(where);
  message.append(" at offset ");
  message.append(std::to_string(offset));
  message.append(": ");
  message.append(what);
  return Unexpected(ErrorCode::kMalformed, std::move(message));
}

uint16_t U16(std::span<const uint8_t> m, size_t pos) {
  return static_cast<uint16_t>((m[pos] << 8) | m[pos + 1]);
}

uint32_t U32(std::span<const uint8_t> m, size_t pos) {
  return (static_cast<uint32_t>(U16(m, pos)) << 16) | U16(m, pos + 2);
}

bool Has(std::span<const uint8_t> m, size_t pos, size_t n) {
  return pos <= m.size() && n <= m.size() - pos;
}

struct ParsedName {
  std::string name;
  size_t next = 0;  // offset just past the name where it started (past the first pointer)
};

Expected<ParsedName> ReadName(std::span<const uint8_t> m, size_t start, std::string_view where) {
  ParsedName out;
  size_t pos = start;
  // Each pointer must aim before the run of labels it ends, so run starts strictly decrease and
  // decompression always terminates; the jump limit also bounds the work per name.
  size_t run_start = start;
  size_t jumps = 0;
  bool jumped = false;
  size_t wire_bytes = 1;  // the root label that ends every name
  for (;;) {
    if (pos >= m.size()) return Malformed(where, pos, "name runs past the end of the message");
    const uint8_t len = m[pos];
    if ((len & 0xC0) == 0xC0) {
      if (!Has(m, pos, 2)) return Malformed(where, pos, "compression pointer cut short");
      const size_t target = U16(m, pos) & 0x3FFF;
      if (target >= run_start) {
        return Malformed(where, pos,
                         "compression pointer to offset " + std::to_string(target) +
                             " does not point before offset " + std::to_string(run_start));
      }
      if (++jumps > kDnsMaxPointerJumps) {
        return Malformed(where, pos,
                         "more than " + std::to_string(kDnsMaxPointerJumps) +
                             " compression pointers in one name");
      }
      if (!jumped) out.next = pos + 2;
      jumped = true;
      pos = run_start = target;
      continue;
    }
    if ((len & 0xC0) != 0) {
      return Malformed(where, pos, "reserved label type (length byte " + std::to_string(len) + ")");
    }
    if (len == 0) {
      if (!jumped) out.next = pos + 1;
      return out;
    }
    wire_bytes += 1 + len;
    if (wire_bytes > kDnsMaxNameWireBytes) {
      return Malformed(where, pos, "name longer than 255 bytes");
    }
    if (!Has(m, pos + 1, len))
      return Malformed(where, pos, "label runs past the end of the message");
    if (!out.name.empty()) out.name.push_back('.');
    for (size_t i = 0; i < len; ++i) {
      const uint8_t c = m[pos + 1 + i];
      // A '.' inside a label would make two different names print the same; control and 8-bit
      // bytes have no place in a host name and would end up in logs and rule reasons.
      if (c <= 0x20 || c >= 0x7F || c == '.') {
        return Malformed(where, pos + 1 + i,
                         "byte " + std::to_string(c) + " is not allowed in a name");
      }
      out.name.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a')
                                              : static_cast<char>(c));
    }
    pos += 1 + len;
  }
}

}  // namespace

Expected<DnsReply> ParseDnsReply(std::span<const uint8_t> m) {
  if (m.size() > kDnsMaxMessageBytes) {
    return Unexpected(ErrorCode::kTooLarge, "DNS reply: " + std::to_string(m.size()) +
                                                " bytes, more than a DNS message can hold (65535)");
  }
  if (m.size() < kHeaderBytes) {
    return Malformed("header", 0,
                     "message of " + std::to_string(m.size()) + " bytes is shorter than 12");
  }
  const uint16_t flags = U16(m, 2);
  if ((flags & 0x8000) == 0) return Malformed("header", 2, "QR is 0: a query, not a reply");
  const unsigned opcode = (flags >> 11) & 0xF;
  if (opcode != 0) {
    return Malformed("header", 2, "opcode " + std::to_string(opcode) + " is not QUERY (0)");
  }
  DnsReply reply;
  reply.id = U16(m, 0);
  reply.rcode = static_cast<uint8_t>(flags & 0xF);
  const uint16_t qdcount = U16(m, 4);
  const uint16_t ancount = U16(m, 6);
  if (qdcount > 1) {
    return Malformed("header", 4, "QDCOUNT " + std::to_string(qdcount) + " is more than 1");
  }
  if (ancount > kDnsMaxAnswers) {
    return Unexpected(ErrorCode::kTooLarge, "DNS reply: header at offset 6: ANCOUNT " +
                                                std::to_string(ancount) + " is more than " +
                                                std::to_string(kDnsMaxAnswers));
  }

  size_t pos = kHeaderBytes;
  if (qdcount == 1) {
    auto name = ReadName(m, pos, "question");
    if (!name) return Unexpected(name.error());
    pos = name->next;
    if (!Has(m, pos, 4)) return Malformed("question", pos, "QTYPE/QCLASS cut short");
    reply.question = std::move(name->name);
    pos += 4;
  }

  reply.answers.reserve(ancount);
  for (size_t i = 0; i < ancount; ++i) {
    const std::string where = "answer " + std::to_string(i);
    auto owner = ReadName(m, pos, where);
    if (!owner) return Unexpected(owner.error());
    pos = owner->next;
    if (!Has(m, pos, kRecordFixedBytes)) {
      return Malformed(where, pos, "TYPE/CLASS/TTL/RDLENGTH cut short");
    }
    const uint16_t type = U16(m, pos);
    const uint16_t klass = U16(m, pos + 2);
    uint32_t ttl = U32(m, pos + 4);
    if (ttl > 0x7FFFFFFFu) ttl = 0;
    const uint16_t rdlength = U16(m, pos + 8);
    pos += kRecordFixedBytes;
    if (!Has(m, pos, rdlength)) {
      return Malformed(
          where, pos, "RDLENGTH " + std::to_string(rdlength) + " runs past the end of the message");
    }
    const size_t rdata_end = pos + rdlength;
    if (klass == kClassIn && (type == kTypeA || type == kTypeAAAA || type == kTypeCname)) {
      DnsRecord record;
      record.name = std::move(owner->name);
      record.ttl = ttl;
      if (type == kTypeA || type == kTypeAAAA) {
        const size_t want = type == kTypeA ? 4 : 16;
        if (rdlength != want) {
          return Malformed(where, pos,
                           std::string(type == kTypeA ? "A" : "AAAA") + " RDLENGTH " +
                               std::to_string(rdlength) + " is not " + std::to_string(want));
        }
        record.type = type == kTypeA ? DnsRecord::Type::kA : DnsRecord::Type::kAAAA;
        record.address.family = type == kTypeA ? 4 : 6;
        for (size_t b = 0; b < want; ++b) record.address.bytes[b] = m[pos + b];
      } else {
        auto target = ReadName(m, pos, where + " CNAME target");
        if (!target) return Unexpected(target.error());
        if (target->next != rdata_end) {
          return Malformed(where, pos, "CNAME target does not fill RDLENGTH exactly");
        }
        record.type = DnsRecord::Type::kCname;
        record.target = std::move(target->name);
      }
      reply.answers.push_back(std::move(record));
    }
    pos = rdata_end;
  }
  return reply;
}

}  // namespace tollgate::analysis
