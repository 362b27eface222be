// Writes the outside bytes the engine reads, for the tests above the parsers (the engine test,
// the golden replay): DNS replies (uncompressed, class IN, answers in the order given) and a
// minimal TLS 1.3 ClientHello. The parsers' own tests write bytes by hand (dns_test.cc,
// first_bytes_test.cc) so that each states its wire format exactly.
#pragma once

#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "common/flow.h"

namespace tollgate::analysis::testing {

struct AnswerSpec {
  std::string owner;
  std::string value;  // an address for A/AAAA (family from the text), a name for CNAME
  uint32_t ttl = 300;
  bool cname = false;
};

inline void PutU16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

inline void PutName(std::vector<uint8_t>& out, std::string_view dotted) {
  while (!dotted.empty()) {
    size_t dot = dotted.find('.');
    std::string_view label = dotted.substr(0, dot);
    out.push_back(static_cast<uint8_t>(label.size()));
    out.insert(out.end(), label.begin(), label.end());
    dotted = dot == std::string_view::npos ? std::string_view{} : dotted.substr(dot + 1);
  }
  out.push_back(0);
}

// A NOERROR reply (or `rcode`) to `question` (type A) with `answers`.
inline std::vector<uint8_t> DnsReplyBytes(std::string_view question,
                                          const std::vector<AnswerSpec>& answers,
                                          uint8_t rcode = 0) {
  std::vector<uint8_t> out;
  PutU16(out, 0x4242);
  PutU16(out, static_cast<uint16_t>(0x8180 | rcode));
  PutU16(out, 1);
  PutU16(out, static_cast<uint16_t>(answers.size()));
  PutU16(out, 0);
  PutU16(out, 0);
  PutName(out, question);
  PutU16(out, 1);
  PutU16(out, 1);
  for (const AnswerSpec& a : answers) {
    PutName(out, a.owner);
    std::vector<uint8_t> rdata;
    uint16_t type = 5;
    if (a.cname) {
      PutName(rdata, a.value);
    } else {
      IpAddress ip = IpAddress::Parse(a.value).value_or(IpAddress{});
      type = ip.family == 4 ? 1 : 28;
      rdata.assign(ip.bytes.begin(), ip.bytes.begin() + static_cast<long>(ip.size()));
    }
    PutU16(out, type);
    PutU16(out, 1);
    PutU16(out, static_cast<uint16_t>(a.ttl >> 16));
    PutU16(out, static_cast<uint16_t>(a.ttl));
    PutU16(out, static_cast<uint16_t>(rdata.size()));
    out.insert(out.end(), rdata.begin(), rdata.end());
  }
  return out;
}

// One TLS record holding a ClientHello with `sni` (none when empty) and ALPN "h2".
inline std::vector<uint8_t> ClientHelloBytes(std::string_view sni) {
  auto u16 = [](std::vector<uint8_t>& b, size_t v) { PutU16(b, static_cast<uint16_t>(v)); };
  std::vector<uint8_t> exts;
  if (!sni.empty()) {
    u16(exts, 0);               // server_name
    u16(exts, sni.size() + 5);  // extension length
    u16(exts, sni.size() + 3);  // server_name_list length
    exts.push_back(0);          // host_name
    u16(exts, sni.size());
    exts.insert(exts.end(), sni.begin(), sni.end());
  }
  const uint8_t alpn[] = {0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x02, 'h', '2'};
  exts.insert(exts.end(), std::begin(alpn), std::end(alpn));
  const uint8_t versions[] = {0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04};
  exts.insert(exts.end(), std::begin(versions), std::end(versions));

  std::vector<uint8_t> body;
  u16(body, 0x0303);
  for (int i = 0; i < 32; ++i) body.push_back(static_cast<uint8_t>(i));  // random
  body.push_back(0);                                                     // no session id
  u16(body, 2);
  u16(body, 0x1301);  // TLS_AES_128_GCM_SHA256
  body.push_back(1);
  body.push_back(0);  // null compression
  u16(body, exts.size());
  body.insert(body.end(), exts.begin(), exts.end());

  std::vector<uint8_t> record = {22, 0x03, 0x01};
  u16(record, body.size() + 4);
  record.push_back(1);  // client_hello
  record.push_back(static_cast<uint8_t>(body.size() >> 16));
  u16(record, body.size() & 0xffff);
  record.insert(record.end(), body.begin(), body.end());
  return record;
}

}  // namespace tollgate::analysis::testing
