// Monotonic time and one-shot timers on an sd-event loop, for the channel client and server, the
// filter's flow-table timer and the probe tool: one place that reads the loop's clock and one
// rule for moving a deadline timer.
#pragma once

#include <systemd/sd-event.h>

#include "common/clock.h"

namespace tollgate::ipc {

// The loop's cached CLOCK_MONOTONIC time of this iteration (no system call).
inline MonoTime LoopNow(sd_event* loop) {
  uint64_t usec = 0;
  sd_event_now(loop, CLOCK_MONOTONIC, &usec);
  return FromUsec(usec);
}

// Arms the one-shot timer `*source` for `when`: made on first use (a new time source is an enabled
// one-shot), re-programmed after that.
inline void ArmOneShot(sd_event* loop, sd_event_source** source, MonoTime when,
                       uint64_t accuracy_usec, sd_event_time_handler_t handler, void* userdata) {
  if (*source == nullptr) {
    sd_event_add_time(loop, source, CLOCK_MONOTONIC, ToUsec(when), accuracy_usec, handler,
                      userdata);
    return;
  }
  sd_event_source_set_time(*source, ToUsec(when));
  sd_event_source_set_enabled(*source, SD_EVENT_ONESHOT);
}

// Makes an existing one-shot timer fire no later than `when`. Re-programming a timer costs a
// system call, so one that is already armed for `when` or earlier is left alone; if it then
// finds nothing due, its handler simply arms it again for what is next.
inline void ArmNoLaterThan(sd_event_source* timer, MonoTime when) {
  int enabled = SD_EVENT_OFF;
  uint64_t armed = 0;
  sd_event_source_get_enabled(timer, &enabled);
  sd_event_source_get_time(timer, &armed);
  if (enabled != SD_EVENT_OFF && armed <= ToUsec(when)) return;
  sd_event_source_set_time(timer, ToUsec(when));
  sd_event_source_set_enabled(timer, SD_EVENT_ONESHOT);
}

}  // namespace tollgate::ipc
