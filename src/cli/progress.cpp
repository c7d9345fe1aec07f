// cli/progress.cpp — the progress line (see progress.hpp).
#include "cli/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace mithril::cli {

double mib_per_s(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / (1 << 20) : 0.0;
}

std::string format_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string format_eta(double seconds) {
  const auto s = static_cast<std::uint64_t>(seconds + 0.5);
  if (s < 60) return fmt::format("{} s", s);
  if (s < 3600) return fmt::format("{}:{:02}", s / 60, s % 60);
  return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
}

namespace {
// MITHRIL_PROGRESS_DELAY: seconds of work before the line appears (default
// 0.3: quick commands print nothing but their summary).
std::chrono::milliseconds progress_delay() {
  const char* v = std::getenv("MITHRIL_PROGRESS_DELAY");
  if (v == nullptr || *v == '\0') return std::chrono::milliseconds(300);
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(s >= 0) || s > 3600) return std::chrono::milliseconds(300);
  return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000));
}
}  // namespace

ProgressBar::ProgressBar(std::string label, bool enabled)
    : m_label(std::move(label)), m_enabled(enabled && ::isatty(STDERR_FILENO)),
      m_delay(progress_delay()), m_start(std::chrono::steady_clock::now()), m_last(m_start) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  if (!m_enabled) return;
  const auto now = std::chrono::steady_clock::now();
  // Only long runs get a line, redrawn at most 10 times a second.
  if (now - m_start < m_delay || (now - m_last < std::chrono::milliseconds(100) && done < total))
    return;
  m_last = now;
  const double secs = std::chrono::duration<double>(now - m_start).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;  // bytes/s
  std::string line;
  if (total > 0) {
    const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const int width = 24;
    const int filled = static_cast<int>(frac * width);
    const std::string eta = rate > 0 && done < total ? format_eta(static_cast<double>(total - done) / rate) : "-";
    line = fmt::format("{} [{}{}] {:3.0f}% {} / {}  {:.0f} MiB/s  ETA {}", m_label, std::string(filled, '#'),
                       std::string(width - filled, '.'), frac * 100, format_bytes(done), format_bytes(total),
                       rate / (1 << 20), eta);
  } else {
    line = fmt::format("{} {}  {:.0f} MiB/s", m_label, format_bytes(done), rate / (1 << 20));
  }
  fmt::print(stderr, "\r{}\033[K", line);
  std::fflush(stderr);
  m_drawn = true;
}

void ProgressBar::finish() {
  if (m_drawn) fmt::print(stderr, "\r\033[K");
  m_drawn = false;
}

}  // namespace mithril::cli
