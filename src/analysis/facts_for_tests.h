// Short builders of the facts the engine consumes (a process, a classification), for the tests of
// the rule table and the engine.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "analysis/app_classifier.h"
#include "analysis/process.h"

namespace tollgate::analysis::testing {

inline ProcessInfo Proc(uint32_t pid, uint32_t uid, std::string exe) {
  ProcessInfo p;
  p.pid = pid;
  p.uid = uid;
  p.exe = std::move(exe);
  return p;
}

inline AppClassification App(std::string protocol, std::string master = "", bool guessed = false) {
  AppClassification a;
  a.protocol = std::move(protocol);
  a.master = std::move(master);
  a.guessed = guessed;
  return a;
}

}  // namespace tollgate::analysis::testing
