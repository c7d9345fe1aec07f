#include "storage/retry.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "util/interrupt.hpp"

namespace mithril::storage {
namespace {

double random_unit() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry, double u) noexcept {
  // u < 0: draw the jitter here (what with_retries does).
  if (u < 0) u = random_unit();
  const double base = static_cast<double>(policy.initial_delay.count()) *
                      std::pow(policy.multiplier, static_cast<double>(std::max(retry, 1) - 1));
  const double capped = std::min(base, static_cast<double>(policy.max_delay.count()));
  const double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(capped * (1.0 - jitter * std::clamp(u, 0.0, 1.0))));
}

void interruptible_sleep(std::chrono::milliseconds delay) {
  const auto until = std::chrono::steady_clock::now() + delay;
  for (;;) {
    util::throw_if_interrupted();
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

Error gave_up(std::string_view endpoint, std::string_view what, const Error& last, int attempts) {
  std::string msg(endpoint);
  msg += ": ";
  msg += what;
  msg += ": ";
  msg += last.what();
  if (attempts > 1) msg += " (gave up after " + std::to_string(attempts) + " attempts)";
  return Error(Errc::remote_unavailable, msg);
}

}  // namespace mithril::storage
