#include "control/records.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "common/rfc3339.h"

namespace tollgate::control {

std::string FormatRfc3339(int64_t time_us, bool micros) {
  return FormatRfc3339Micros(time_us, micros);
}

std::optional<int64_t> ParseRfc3339(std::string_view text) { return ParseRfc3339Micros(text); }

int64_t ToUnixMicros(analysis::WallTime time) {
  return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

flowlog::FlowRecord ToFlowRecord(const analysis::DecisionRecord& record) {
  flowlog::FlowRecord out;
  const FlowQuestion& q = record.question;
  out.time_us = ToUnixMicros(record.time);
  out.protocol = ProtocolName(q.tuple.protocol);
  out.direction = q.direction == Direction::kInbound ? "inbound" : "outbound";
  out.src = q.tuple.src.ToString();
  out.src_port = q.tuple.src_port;
  out.dst = q.tuple.dst.ToString();
  out.dst_port = q.tuple.dst_port;
  if (q.uid != kUnknownId) out.uid = q.uid;
  if (record.process && record.process->state == analysis::Attribution::kFound) {
    const analysis::ProcessInfo& p = record.process->process;
    out.pid = p.pid;
    out.exe = p.exe;
    out.user = p.user;
    out.unit = p.unit;
    if (!out.uid && p.uid != kUnknownId) out.uid = p.uid;
  }
  if (!record.names.empty()) out.name = record.names.front().name;
  out.action = ActionName(record.verdict.action);
  out.rule = record.rule;
  out.reason = record.verdict.reason;
  return out;
}

namespace {

nlohmann::json OrNull(const std::string& text) {
  return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

}  // namespace

nlohmann::json DecisionJson(const flowlog::FlowRecord& r) {
  nlohmann::json flow = {
      {"protocol", r.protocol},
      {"direction", r.direction},
      {"src", r.src},
      {"src_port", r.src_port},
      {"dst", r.dst},
      {"dst_port", r.dst_port},
      {"uid", r.uid ? nlohmann::json(*r.uid) : nlohmann::json(nullptr)},
      {"name", OrNull(r.name)},
      {"sni", nullptr},
  };
  return {
      {"time", FormatRfc3339(r.time_us)},
      {"flow", std::move(flow)},
      {"action", r.action},
      {"rule", OrNull(r.rule)},
      {"reason", r.reason},
      {"name", OrNull(r.name)},
      {"pid", r.pid ? nlohmann::json(*r.pid) : nlohmann::json(nullptr)},
      {"exe", OrNull(r.exe)},
      {"user", OrNull(r.user)},
      {"unit", OrNull(r.unit)},
  };
}

std::optional<uint8_t> ParseProtocolName(std::string_view name) {
  if (name == "tcp") return ipproto::kTcp;
  if (name == "udp") return ipproto::kUdp;
  if (name == "icmp") return ipproto::kIcmp;
  if (name == "icmpv6") return ipproto::kIcmpV6;
  return std::nullopt;
}

std::optional<FlowQuestion> QuestionFromSpec(const FlowSpec& spec, std::string* bad_parameter,
                                             std::string* message) {
  auto fail = [&](const char* parameter, std::string why) -> std::optional<FlowQuestion> {
    *bad_parameter = parameter;
    *message = std::move(why);
    return std::nullopt;
  };
  FlowQuestion q;
  std::optional<uint8_t> protocol = ParseProtocolName(spec.protocol);
  if (!protocol) {
    return fail("flow.protocol", "must be tcp, udp, icmp or icmpv6, got \"" + spec.protocol + "\"");
  }
  q.tuple.protocol = *protocol;
  if (spec.direction == "outbound") {
    q.direction = Direction::kOutbound;
  } else if (spec.direction == "inbound") {
    q.direction = Direction::kInbound;
  } else {
    return fail("flow.direction", "must be outbound or inbound, got \"" + spec.direction + "\"");
  }
  std::optional<IpAddress> src = IpAddress::Parse(spec.src);
  if (!src) return fail("flow.src", "not an IPv4 or IPv6 address: \"" + spec.src + "\"");
  std::optional<IpAddress> dst = IpAddress::Parse(spec.dst);
  if (!dst) return fail("flow.dst", "not an IPv4 or IPv6 address: \"" + spec.dst + "\"");
  if (src->family != dst->family) {
    return fail("flow.dst", "src and dst must both be IPv4 or both IPv6");
  }
  const bool v6 = dst->family == 6;
  if ((q.tuple.protocol == ipproto::kIcmp && v6) || (q.tuple.protocol == ipproto::kIcmpV6 && !v6)) {
    return fail("flow.protocol", "icmp goes with IPv4 addresses and icmpv6 with IPv6 ones");
  }
  q.tuple.src = *src;
  q.tuple.dst = *dst;
  const bool has_ports = q.tuple.protocol == ipproto::kTcp || q.tuple.protocol == ipproto::kUdp;
  const int64_t max_port = has_ports ? 65535 : 255;  // ICMP: type and code
  if (spec.src_port < 0 || spec.src_port > max_port) {
    return fail("flow.src_port", "must be from 0 to " + std::to_string(max_port));
  }
  if (spec.dst_port < 0 || spec.dst_port > max_port) {
    return fail("flow.dst_port", "must be from 0 to " + std::to_string(max_port));
  }
  q.tuple.src_port = static_cast<uint16_t>(spec.src_port);
  q.tuple.dst_port = static_cast<uint16_t>(spec.dst_port);
  if (spec.uid) {
    if (*spec.uid < 0 || *spec.uid >= kUnknownId) {
      return fail("flow.uid", "must be a uid from 0 to 4294967294");
    }
    q.uid = static_cast<uint32_t>(*spec.uid);
  }
  if (spec.sni) {
    if (q.tuple.protocol != ipproto::kTcp || q.direction != Direction::kOutbound) {
      return fail("flow.sni", "only an outbound tcp flow carries a TLS ClientHello");
    }
    if (spec.sni->empty() || spec.sni->size() > 253) {
      return fail("flow.sni", "must be a host name of 1 to 253 characters");
    }
    q.payload = ClientHelloWithSni(*spec.sni);
  }
  return q;
}

std::optional<FlowQuestion> QuestionFromRecord(const flowlog::FlowRecord& record) {
  FlowSpec spec;
  spec.protocol = record.protocol;
  spec.direction = record.direction;
  spec.src = record.src;
  spec.src_port = record.src_port;
  spec.dst = record.dst;
  spec.dst_port = record.dst_port;
  if (record.uid) spec.uid = *record.uid;
  std::string parameter;
  std::string message;
  return QuestionFromSpec(spec, &parameter, &message);
}

namespace {

void PutU16(std::vector<uint8_t>& out, size_t value) {
  out.push_back(static_cast<uint8_t>(value >> 8));
  out.push_back(static_cast<uint8_t>(value));
}

}  // namespace

// The smallest ClientHello our reader (first_bytes.h) and real servers accept: TLS 1.2 legacy
// version, a fixed random, one cipher suite, null compression, server_name and
// supported_versions (TLS 1.3). Nothing here is sent on the network; it only feeds the engine.
std::vector<uint8_t> ClientHelloWithSni(std::string_view sni) {
  std::vector<uint8_t> extensions;
  PutU16(extensions, 0);               // server_name
  PutU16(extensions, sni.size() + 5);  // extension_data length
  PutU16(extensions, sni.size() + 3);  // ServerNameList length
  extensions.push_back(0);             // name_type host_name
  PutU16(extensions, sni.size());
  extensions.insert(extensions.end(), sni.begin(), sni.end());
  const uint8_t supported_versions[] = {0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04};
  extensions.insert(extensions.end(), std::begin(supported_versions), std::end(supported_versions));

  std::vector<uint8_t> hello;
  PutU16(hello, 0x0303);                               // legacy_version
  for (int i = 0; i < 32; ++i) hello.push_back(0x5a);  // random
  hello.push_back(0);                                  // legacy_session_id
  PutU16(hello, 2);                                    // cipher_suites length
  PutU16(hello, 0x1301);                               // TLS_AES_128_GCM_SHA256
  hello.push_back(1);                                  // compression methods
  hello.push_back(0);                                  // null
  PutU16(hello, extensions.size());
  hello.insert(hello.end(), extensions.begin(), extensions.end());

  std::vector<uint8_t> record = {22, 0x03, 0x01};  // handshake, TLS 1.0 record version
  PutU16(record, hello.size() + 4);
  record.push_back(1);  // client_hello
  record.push_back(static_cast<uint8_t>(hello.size() >> 16));
  PutU16(record, hello.size() & 0xffff);
  record.insert(record.end(), hello.begin(), hello.end());
  return record;
}

}  // namespace tollgate::control
