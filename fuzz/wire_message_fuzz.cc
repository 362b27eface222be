// Fuzzes the analysis-channel decoder: every byte string must be rejected cleanly or decoded into
// items that re-encode and decode again to the same count (no crash, no over-read, no UB).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ipc/codec.h"

namespace {
struct Counter : tollgate::ipc::ItemVisitor {
  size_t items = 0;
  tollgate::ipc::MessageBuilder* rebuild = nullptr;
  void OnQuestion(const tollgate::FlowQuestion& q) override {
    ++items;
    if (rebuild) rebuild->AddQuestion(q);
  }
  void OnVerdict(const tollgate::Verdict& v) override {
    ++items;
    if (rebuild) rebuild->AddVerdict(v);
  }
  void OnHello(const tollgate::ipc::Hello& h) override {
    ++items;
    if (rebuild) rebuild->AddHello(h);
  }
  void OnWelcome(const tollgate::ipc::Welcome& w) override {
    ++items;
    if (rebuild) rebuild->AddWelcome(w);
  }
  void OnRefused(const tollgate::ipc::Refused& r) override {
    ++items;
    if (rebuild) rebuild->AddRefused(r.reason);
  }
  void OnGoodbye(const tollgate::ipc::Goodbye& g) override {
    ++items;
    if (rebuild) rebuild->AddGoodbye(g.reason);
  }
  void OnDnsObservation(std::span<const uint8_t> reply) override {
    ++items;
    if (rebuild) rebuild->AddDnsObservation(reply);
  }
  void OnForget(const tollgate::ipc::ForgetSelector& f) override {
    ++items;
    if (rebuild) rebuild->AddForget(f);
  }
  void OnPing(uint64_t t) override {
    ++items;
    if (rebuild) rebuild->AddPing(t);
  }
  void OnPong(uint64_t t) override {
    ++items;
    if (rebuild) rebuild->AddPong(t);
  }
  void OnFilterReport(const tollgate::ipc::FilterReport& r) override {
    ++items;
    reports.push_back(r);
    if (rebuild) rebuild->AddFilterReport(r);
  }
  void OnDecided(const tollgate::FlowQuestion& q, tollgate::Action a) override {
    ++items;
    if (rebuild) rebuild->AddDecided(q, a);
  }
  std::vector<tollgate::ipc::FilterReport> reports;
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tollgate::ipc::MessageBuilder rebuild;
  Counter first;
  first.rebuild = &rebuild;
  if (!tollgate::ipc::DecodeMessage(std::span(data, size), first)) return 0;
  Counter second;
  auto status = tollgate::ipc::DecodeMessage(rebuild.Finish(), second);
  if (!status || second.items != first.items || second.reports != first.reports) __builtin_trap();
  return 0;
}
