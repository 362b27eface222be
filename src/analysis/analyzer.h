// The daemon's decision seam: one question in, one verdict out, with a reason a person can read.
// The channel server calls it for every FlowQuestion; the rule engine, DNS names, inspection and
// blocklists (issue 4) live behind it. Implementations must not block and must not throw.
#pragma once

#include "common/flow.h"

namespace tollgate::analysis {

class Analyzer {
 public:
  virtual ~Analyzer() = default;
  virtual Verdict Decide(const FlowQuestion& question) = 0;
  // A DNS reply the filter saw; analyzers that map names use it, others ignore it.
  // A flow a filter decided itself from a destination-scoped verdict (CacheScope::kDestination),
  // reported after the fact so that it is logged like any other decision.
  virtual void ObserveDecided(const FlowQuestion& question, Action action) {
    (void)question;
    (void)action;
  }
  virtual void ObserveDns(const uint8_t* reply, size_t size) {
    (void)reply;
    (void)size;
  }
};

}  // namespace tollgate::analysis
