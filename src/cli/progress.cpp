#include "cli/progress.hpp"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace mithril::cli {

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

ProgressBar::ProgressBar(std::string label, bool enabled)
    : m_label(std::move(label)), m_enabled(enabled && ::isatty(STDERR_FILENO)),
      m_start(std::chrono::steady_clock::now()), m_last(m_start) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  if (!m_enabled) return;
  const auto now = std::chrono::steady_clock::now();
  // Only long runs get a bar, redrawn at most 10 times a second.
  if (now - m_start < std::chrono::milliseconds(300) || (now - m_last < std::chrono::milliseconds(100) && done < total))
    return;
  m_last = now;
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  const int width = 30;
  const int filled = static_cast<int>(frac * width);
  const double secs = std::chrono::duration<double>(now - m_start).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs / (1 << 20) : 0;
  fmt::print(stderr, "\r{} [{}{}] {:3.0f}% {} / {}  {:.0f} MiB/s \033[K", m_label, std::string(filled, '#'),
             std::string(width - filled, '.'), frac * 100, format_bytes(done), format_bytes(total), rate);
  m_drawn = true;
}

void ProgressBar::finish() {
  if (m_drawn) fmt::print(stderr, "\r\033[K");
  m_drawn = false;
}

}  // namespace mithril::cli
