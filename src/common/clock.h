// Monotonic time behind an interface so deadline, fallback and backoff logic can be tested with a
// fake clock, never with sleeps.
#pragma once

#include <chrono>
#include <cstdint>

namespace tollgate {

using Duration = std::chrono::microseconds;
// Monotonic microseconds (CLOCK_MONOTONIC), the unit sd-event timers use too.
using MonoTime = std::chrono::time_point<std::chrono::steady_clock, Duration>;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime Now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  MonoTime Now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
  }
};

class FakeClock final : public Clock {
 public:
  MonoTime Now() const override { return now_; }
  void Advance(Duration d) { now_ += d; }

 private:
  MonoTime now_{Duration{1'000'000}};
};

inline uint64_t ToUsec(MonoTime t) { return static_cast<uint64_t>(t.time_since_epoch().count()); }
inline MonoTime FromUsec(uint64_t us) { return MonoTime{Duration{static_cast<int64_t>(us)}}; }

}  // namespace tollgate
