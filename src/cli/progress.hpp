// cli/progress.hpp — one progress line on stderr for long work (compress,
// decompress, verify, series add): bytes done / total, percent, MiB/s, ETA.
//
// Drawn only when enabled (no -q) and stderr is a terminal, and only once the
// work has run for 300 ms (MITHRIL_PROGRESS_DELAY, in seconds, changes that), redrawn at most 10 times a second, erased by
// finish() (and the destructor), so that the summary line that follows stands
// alone. Not thread-safe: call update() from one thread at a time (the
// library's progress callbacks are made from the calling thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mithril::cli {

class ProgressBar {
 public:
  ProgressBar(std::string label, bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  // `done` of `total` bytes; total 0 means unknown (no percent, no ETA).
  void update(std::uint64_t done, std::uint64_t total);
  void finish();

 private:
  std::string m_label;
  bool m_enabled;
  bool m_drawn = false;
  std::chrono::milliseconds m_delay;
  std::chrono::steady_clock::time_point m_start;
  std::chrono::steady_clock::time_point m_last;
};

std::string format_bytes(std::uint64_t bytes);
// MiB/s for a summary line (0 for no time).
double mib_per_s(std::uint64_t bytes, double seconds);
// "7 s", "1:05", "2:03:04": a duration for the ETA.
std::string format_eta(double seconds);

}  // namespace mithril::cli
