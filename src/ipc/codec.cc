#include "ipc/codec.h"

#include <flatbuffers/flatbuffers.h>

#include <cstring>

#include "proto/tollgate_generated.h"

namespace tollgate::ipc {
namespace w = ::tollgate::wire;

const char* RoleName(Role role) {
  switch (role) {
    case Role::kUnknown:
      return "unknown";
    case Role::kFilter:
      return "filter";
    case Role::kAgent:
      return "agent";
    case Role::kProbe:
      return "probe";
  }
  return "?";
}

Status CheckPeerVersion(uint16_t peer_major, uint16_t peer_minor) {
  if (peer_major != kProtocolMajor) {
    return Unexpected(ErrorCode::kProtocol,
                      "protocol version " + std::to_string(peer_major) + "." +
                          std::to_string(peer_minor) + " is not compatible with " +
                          std::to_string(kProtocolMajor) + "." + std::to_string(kProtocolMinor) +
                          " (major versions differ); install matching tollgate-filter and "
                          "tollgated versions");
  }
  return {};
}

namespace {

w::Ip ToWire(const IpAddress& ip) {
  return w::Ip(flatbuffers::span<const uint8_t, 16>(ip.bytes.data(), 16));
}

IpAddress FromWire(const w::Ip* ip, uint8_t family) {
  IpAddress out;
  out.family = family;
  if (ip != nullptr) std::memcpy(out.bytes.data(), ip->b()->Data(), 16);
  if (family == 4) std::fill(out.bytes.begin() + 4, out.bytes.end(), 0);
  return out;
}

std::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view{} : std::string_view(s->c_str(), s->size());
}

Status Malformed(std::string what) { return Unexpected(ErrorCode::kMalformed, std::move(what)); }

Status CheckQuestion(const w::FlowQuestion* q) {
  if (q->family() != 4 && q->family() != 6) return Malformed("question: family must be 4 or 6");
  if (q->src() == nullptr || q->dst() == nullptr) return Malformed("question: address missing");
  if (static_cast<uint8_t>(q->direction()) > static_cast<uint8_t>(w::Direction::MAX))
    return Malformed("question: unknown direction");
  if (q->payload() && q->payload()->size() > kMaxPayloadBytes)
    return Malformed("question: payload over " + std::to_string(kMaxPayloadBytes) + " bytes");
  return {};
}

// Into `question`, reusing its payload buffer. `q` has passed CheckQuestion.
void ReadQuestion(const w::FlowQuestion* q, FlowQuestion& question) {
  question.id = q->id();
  question.tuple.src = FromWire(q->src(), q->family());
  question.tuple.dst = FromWire(q->dst(), q->family());
  question.tuple.src_port = q->src_port();
  question.tuple.dst_port = q->dst_port();
  question.tuple.protocol = q->protocol();
  question.direction = static_cast<Direction>(q->direction());
  question.iface = q->iface();
  question.uid = q->uid();
  question.gid = q->gid();
  if (q->payload() != nullptr) {
    question.payload.assign(q->payload()->begin(), q->payload()->end());
  } else {
    question.payload.clear();
  }
}

// Bounds the FlatBuffers Verifier cannot know: enum ranges, families, sizes.
Status CheckItem(w::Item type, const void* item) {
  switch (type) {
    case w::Item::Hello: {
      auto* h = static_cast<const w::Hello*>(item);
      if (static_cast<uint8_t>(h->role()) > static_cast<uint8_t>(w::Role::MAX))
        return Malformed("hello: unknown role");
      if (h->build() && h->build()->size() > kMaxReasonBytes)
        return Malformed("hello: build too long");
      return {};
    }
    case w::Item::Welcome: {
      auto* m = static_cast<const w::Welcome*>(item);
      if (m->settings() &&
          static_cast<uint8_t>(m->settings()->fallback()) > static_cast<uint8_t>(w::Fallback::MAX))
        return Malformed("welcome: unknown fallback policy");
      if (m->build() && m->build()->size() > kMaxReasonBytes)
        return Malformed("welcome: build too long");
      return {};
    }
    case w::Item::Refused: {
      auto* r = static_cast<const w::Refused*>(item);
      if (r->reason() && r->reason()->size() > kMaxReasonBytes)
        return Malformed("refused: reason too long");
      return {};
    }
    case w::Item::Goodbye: {
      auto* g = static_cast<const w::Goodbye*>(item);
      if (g->reason() && g->reason()->size() > kMaxReasonBytes)
        return Malformed("goodbye: reason too long");
      return {};
    }
    case w::Item::FlowQuestion:
      return CheckQuestion(static_cast<const w::FlowQuestion*>(item));
    case w::Item::Decided: {
      auto* d = static_cast<const w::Decided*>(item);
      if (d->question() == nullptr) return Malformed("decided: no question");
      if (static_cast<uint8_t>(d->action()) > static_cast<uint8_t>(w::Action::MAX) ||
          d->action() == w::Action::Inspect)
        return Malformed("decided: action must be allow, deny or reject");
      return CheckQuestion(d->question());
    }
    case w::Item::Verdict: {
      auto* v = static_cast<const w::Verdict*>(item);
      if (static_cast<uint8_t>(v->action()) > static_cast<uint8_t>(w::Action::MAX))
        return Malformed("verdict: unknown action");
      if (static_cast<uint8_t>(v->cache()) > static_cast<uint8_t>(w::CacheScope::MAX))
        return Malformed("verdict: unknown cache scope");
      if (v->reason() && v->reason()->size() > kMaxReasonBytes)
        return Malformed("verdict: reason too long");
      return {};
    }
    case w::Item::DnsObservation: {
      auto* d = static_cast<const w::DnsObservation*>(item);
      if (d->reply() == nullptr) return Malformed("dns observation: no reply bytes");
      return {};
    }
    case w::Item::Forget: {
      auto* f = static_cast<const w::Forget*>(item);
      if (f->family() != 0 && f->family() != 4 && f->family() != 6)
        return Malformed("forget: family must be 0, 4 or 6");
      if (f->dst_prefix() > (f->family() == 4 ? 32 : 128))
        return Malformed("forget: prefix too long");
      return {};
    }
    case w::Item::Ping:
    case w::Item::Pong:
    case w::Item::FilterReport:  // numbers only: any value is a value
      return {};
    case w::Item::NONE:
      break;
  }
  return Malformed("item of unknown type " + std::to_string(static_cast<int>(type)));
}

}  // namespace

Status DecodeMessage(std::span<const uint8_t> bytes, ItemVisitor& visitor) {
  if (bytes.size() > kMaxMessageBytes) {
    return Unexpected(ErrorCode::kTooLarge, "message of " + std::to_string(bytes.size()) +
                                                " bytes is over the " +
                                                std::to_string(kMaxMessageBytes) + "-byte limit");
  }
  // Every table of a message is one item or one of its sub-tables; a few per item at most.
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), /*max_depth=*/16,
                                 /*max_tables=*/kMaxItemsPerMessage * 4);
  if (!w::VerifyMessageBuffer(verifier)) return Malformed("message failed verification");
  const w::Message* msg = w::GetMessage(bytes.data());
  const auto* types = msg->items_type();
  const auto* items = msg->items();
  if (types == nullptr || items == nullptr || types->size() == 0)
    return Malformed("message has no items");
  if (types->size() != items->size())
    return Malformed("message item types and items differ in count");
  if (types->size() > kMaxItemsPerMessage) {
    return Unexpected(ErrorCode::kTooLarge, "message has " + std::to_string(types->size()) +
                                                " items, over the limit of " +
                                                std::to_string(kMaxItemsPerMessage));
  }
  for (flatbuffers::uoffset_t i = 0; i < types->size(); ++i) {
    Status s = CheckItem(types->Get(i), items->Get(i));
    if (!s) return s;
  }

  FlowQuestion question;
  Verdict verdict;
  for (flatbuffers::uoffset_t i = 0; i < types->size(); ++i) {
    const void* item = items->Get(i);
    switch (types->Get(i)) {
      case w::Item::Hello: {
        auto* h = static_cast<const w::Hello*>(item);
        visitor.OnHello(Hello{h->major(), h->minor(), static_cast<Role>(h->role()),
                              std::string(View(h->build()))});
        break;
      }
      case w::Item::Welcome: {
        auto* m = static_cast<const w::Welcome*>(item);
        Welcome welcome{m->major(), m->minor(), std::string(View(m->build())), {}};
        if (const auto* s = m->settings()) {
          welcome.settings.question_deadline_ms = s->question_deadline_ms();
          welcome.settings.fallback = static_cast<FallbackPolicy>(s->fallback());
          welcome.settings.inspect_max_bytes = s->inspect_max_bytes();
        }
        visitor.OnWelcome(welcome);
        break;
      }
      case w::Item::Refused:
        visitor.OnRefused(
            Refused{std::string(View(static_cast<const w::Refused*>(item)->reason()))});
        break;
      case w::Item::Goodbye:
        visitor.OnGoodbye(
            Goodbye{std::string(View(static_cast<const w::Goodbye*>(item)->reason()))});
        break;
      case w::Item::FlowQuestion:
        ReadQuestion(static_cast<const w::FlowQuestion*>(item), question);
        visitor.OnQuestion(question);
        break;
      case w::Item::Decided: {
        auto* d = static_cast<const w::Decided*>(item);
        ReadQuestion(d->question(), question);
        visitor.OnDecided(question, static_cast<Action>(d->action()));
        break;
      }
      case w::Item::Verdict: {
        auto* v = static_cast<const w::Verdict*>(item);
        verdict.id = v->id();
        verdict.action = static_cast<Action>(v->action());
        verdict.inspect_bytes = v->inspect_bytes();
        verdict.reason.assign(View(v->reason()));
        verdict.cache = static_cast<CacheScope>(v->cache());
        verdict.cache_ttl_ms = v->cache_ttl_ms();
        verdict.cache_until_dns = v->cache_until_dns();
        visitor.OnVerdict(verdict);
        break;
      }
      case w::Item::DnsObservation: {
        auto* d = static_cast<const w::DnsObservation*>(item);
        visitor.OnDnsObservation(std::span<const uint8_t>(d->reply()->data(), d->reply()->size()));
        break;
      }
      case w::Item::Forget: {
        auto* f = static_cast<const w::Forget*>(item);
        ForgetSelector sel;
        sel.all = f->all();
        if (f->family() != 0) sel.dst = FromWire(f->dst(), f->family());
        sel.dst_prefix = f->dst_prefix();
        sel.protocol = f->protocol();
        sel.dst_port = f->dst_port();
        visitor.OnForget(sel);
        break;
      }
      case w::Item::Ping:
        visitor.OnPing(static_cast<const w::Ping*>(item)->token());
        break;
      case w::Item::Pong:
        visitor.OnPong(static_cast<const w::Pong*>(item)->token());
        break;
      case w::Item::FilterReport: {
        auto* f = static_cast<const w::FilterReport*>(item);
        FilterReport report;
        report.packets = f->packets();
        report.questions = f->questions();
        report.answered = f->answered();
        report.fallbacks_deadline = f->fallbacks_deadline();
        report.fallbacks_daemon_away = f->fallbacks_daemon_away();
        report.fallbacks_overflow = f->fallbacks_overflow();
        report.late_answers = f->late_answers();
        report.pending = f->pending();
        report.max_pending = f->max_pending();
        report.queue_lost = f->queue_lost();
        report.queue_enobufs = f->queue_enobufs();
        report.verdict_errors = f->verdict_errors();
        report.channel_dropped = f->channel_dropped();
        report.first_queue = f->first_queue();
        report.last_queue = f->last_queue();
        report.fail_open = f->fail_open();
        report.reused = f->reused();
        visitor.OnFilterReport(report);
        break;
      }
      case w::Item::NONE:
        TG_CHECK(false);  // rejected by CheckItem above
    }
  }
  return {};
}

MessageBuilder::MessageBuilder() : fbb_(std::make_unique<flatbuffers::FlatBufferBuilder>(4096)) {
  types_.reserve(64);
  offsets_.reserve(64);
}
MessageBuilder::~MessageBuilder() = default;

void MessageBuilder::Reset() {
  fbb_->Clear();
  types_.clear();
  offsets_.clear();
  finished_ = false;
}

void MessageBuilder::Push(uint8_t type, uint32_t offset) {
  types_.push_back(type);
  offsets_.push_back(offset);
}

bool MessageBuilder::WouldFit(size_t item_bytes) const {
  if (types_.size() >= kMaxItemsPerMessage) return false;
  // Headroom for the two item vectors and the root table.
  size_t projected = fbb_->GetSize() + item_bytes + (types_.size() + 1) * 5 + 64;
  return projected <= kMaxMessageBytes;
}

void MessageBuilder::AddHello(const Hello& hello) {
  if (finished_) Reset();
  auto build = fbb_->CreateString(hello.build);
  auto off =
      w::CreateHello(*fbb_, hello.major, hello.minor, static_cast<w::Role>(hello.role), build);
  Push(static_cast<uint8_t>(w::Item::Hello), off.o);
}

void MessageBuilder::AddWelcome(const Welcome& welcome) {
  if (finished_) Reset();
  auto build = fbb_->CreateString(welcome.build);
  auto settings = w::CreateSettings(*fbb_, welcome.settings.question_deadline_ms,
                                    static_cast<w::Fallback>(welcome.settings.fallback),
                                    welcome.settings.inspect_max_bytes);
  auto off = w::CreateWelcome(*fbb_, welcome.major, welcome.minor, build, settings);
  Push(static_cast<uint8_t>(w::Item::Welcome), off.o);
}

void MessageBuilder::AddRefused(std::string_view reason) {
  if (finished_) Reset();
  auto r = fbb_->CreateString(reason.substr(0, kMaxReasonBytes));
  Push(static_cast<uint8_t>(w::Item::Refused), w::CreateRefused(*fbb_, r).o);
}

void MessageBuilder::AddGoodbye(std::string_view reason) {
  if (finished_) Reset();
  auto r = fbb_->CreateString(reason.substr(0, kMaxReasonBytes));
  Push(static_cast<uint8_t>(w::Item::Goodbye), w::CreateGoodbye(*fbb_, r).o);
}

void MessageBuilder::AddQuestion(const FlowQuestion& q) {
  if (finished_) Reset();
  Push(static_cast<uint8_t>(w::Item::FlowQuestion), BuildQuestion(q));
}

void MessageBuilder::AddDecided(const FlowQuestion& q, Action action) {
  if (finished_) Reset();
  TG_CHECK(action != Action::kInspect);
  auto question = flatbuffers::Offset<w::FlowQuestion>(BuildQuestion(q));
  Push(static_cast<uint8_t>(w::Item::Decided),
       w::CreateDecided(*fbb_, question, static_cast<w::Action>(action)).o);
}

uint32_t MessageBuilder::BuildQuestion(const FlowQuestion& q) {
  TG_CHECK(q.payload.size() <= kMaxPayloadBytes);
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> payload;
  if (!q.payload.empty()) payload = fbb_->CreateVector(q.payload);
  w::Ip src = ToWire(q.tuple.src);
  w::Ip dst = ToWire(q.tuple.dst);
  w::FlowQuestionBuilder b(*fbb_);
  b.add_id(q.id);
  b.add_src(&src);
  b.add_dst(&dst);
  b.add_iface(q.iface);
  b.add_uid(q.uid);
  b.add_gid(q.gid);
  if (!q.payload.empty()) b.add_payload(payload);
  b.add_src_port(q.tuple.src_port);
  b.add_dst_port(q.tuple.dst_port);
  b.add_family(q.tuple.src.family);
  b.add_protocol(q.tuple.protocol);
  b.add_direction(static_cast<w::Direction>(q.direction));
  return b.Finish().o;
}

void MessageBuilder::AddVerdict(const Verdict& v) {
  if (finished_) Reset();
  auto reason = fbb_->CreateString(std::string_view(v.reason).substr(0, kMaxReasonBytes));
  auto off =
      w::CreateVerdict(*fbb_, v.id, static_cast<w::Action>(v.action), v.inspect_bytes, reason,
                       static_cast<w::CacheScope>(v.cache), v.cache_ttl_ms, v.cache_until_dns);
  Push(static_cast<uint8_t>(w::Item::Verdict), off.o);
}

void MessageBuilder::AddDnsObservation(std::span<const uint8_t> reply) {
  if (finished_) Reset();
  auto bytes = fbb_->CreateVector(reply.data(), reply.size());
  Push(static_cast<uint8_t>(w::Item::DnsObservation), w::CreateDnsObservation(*fbb_, bytes).o);
}

void MessageBuilder::AddForget(const ForgetSelector& s) {
  if (finished_) Reset();
  w::Ip dst = ToWire(s.dst);
  auto off =
      w::CreateForget(*fbb_, s.all, s.dst.family, &dst, s.dst_prefix, s.protocol, s.dst_port);
  Push(static_cast<uint8_t>(w::Item::Forget), off.o);
}

void MessageBuilder::AddPing(uint64_t token) {
  if (finished_) Reset();
  Push(static_cast<uint8_t>(w::Item::Ping), w::CreatePing(*fbb_, token).o);
}

void MessageBuilder::AddPong(uint64_t token) {
  if (finished_) Reset();
  Push(static_cast<uint8_t>(w::Item::Pong), w::CreatePong(*fbb_, token).o);
}

void MessageBuilder::AddFilterReport(const FilterReport& r) {
  if (finished_) Reset();
  w::FilterReportBuilder b(*fbb_);
  b.add_packets(r.packets);
  b.add_questions(r.questions);
  b.add_answered(r.answered);
  b.add_fallbacks_deadline(r.fallbacks_deadline);
  b.add_fallbacks_daemon_away(r.fallbacks_daemon_away);
  b.add_fallbacks_overflow(r.fallbacks_overflow);
  b.add_late_answers(r.late_answers);
  b.add_queue_lost(r.queue_lost);
  b.add_queue_enobufs(r.queue_enobufs);
  b.add_verdict_errors(r.verdict_errors);
  b.add_channel_dropped(r.channel_dropped);
  b.add_reused(r.reused);
  b.add_pending(r.pending);
  b.add_max_pending(r.max_pending);
  b.add_first_queue(r.first_queue);
  b.add_last_queue(r.last_queue);
  b.add_fail_open(r.fail_open);
  Push(static_cast<uint8_t>(w::Item::FilterReport), b.Finish().o);
}

std::span<const uint8_t> MessageBuilder::Finish() {
  TG_CHECK(!types_.empty());
  if (!finished_) {
    auto types = fbb_->CreateVector(reinterpret_cast<const w::Item*>(types_.data()), types_.size());
    // Offsets were recorded as raw uoffset values; rebuild typed offsets for the union vector.
    fbb_->StartVector(offsets_.size(), sizeof(flatbuffers::uoffset_t));
    for (size_t i = offsets_.size(); i > 0; --i) {
      fbb_->PushElement(flatbuffers::Offset<void>(offsets_[i - 1]));
    }
    auto items = flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<void>>>(
        fbb_->EndVector(offsets_.size()));
    auto msg = w::CreateMessage(*fbb_, types, items);
    w::FinishMessageBuffer(*fbb_, msg);
    finished_ = true;
  }
  return {fbb_->GetBufferPointer(), fbb_->GetSize()};
}

}  // namespace tollgate::ipc
