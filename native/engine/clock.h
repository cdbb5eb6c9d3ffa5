// The one clock of the native code: every stage time (CPU and CUDA backends, the engine, the addon's
// queue time) is a difference of steady_us() readings, so the timings of one request add up; the
// caller's deadline is wall-clock time (ms since the Unix epoch, as JavaScript's Date.now()).
#pragma once

#include <chrono>

namespace adrank {

// Microseconds on the monotonic clock (only differences mean anything).
inline double steady_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Milliseconds since the Unix epoch (for deadlines set by the caller).
inline double epoch_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace adrank
