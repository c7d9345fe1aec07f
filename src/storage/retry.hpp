// storage/retry.hpp — timeouts are enforced by each backend; this is the one
// place that decides whether and when to try a failed call again.
//
// A backend classifies each failure: TransientError (connection refused or
// reset, timeout, HTTP 5xx/429, Redis LOADING/BUSY) is retried with
// exponential backoff and jitter; any other Error (access denied, a bad
// request, an interrupt) is final at once. After the last attempt the
// failure becomes Error(remote_unavailable, "<endpoint>: <what>: <cause>
// (gave up after N attempts)").
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "mithril/error.hpp"

namespace mithril::storage {

struct RetryPolicy {
  int attempts = 4;  // tries in all, >= 1
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{2000};
  double multiplier = 2.0;
  double jitter = 0.25;  // each delay is scaled by a factor drawn from [1 - jitter, 1]
};

// The delay before retry number `retry` (1 = after the first failure):
// initial_delay * multiplier^(retry-1), capped at max_delay, then scaled by
// (1 - jitter * u) for u in [0, 1). Deterministic for a given u.
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry, double u) noexcept;

// A failure that another attempt may cure.
class TransientError : public Error {
 public:
  explicit TransientError(const std::string& message) : Error(Errc::remote_unavailable, message) {}
};

using Sleeper = std::function<void(std::chrono::milliseconds)>;

// Sleeps in short slices and throws Error(io, "interrupted") as soon as a
// fatal signal was deferred (util/interrupt.hpp).
void interruptible_sleep(std::chrono::milliseconds delay);

// Error(remote_unavailable) for a call that failed `attempts` times.
Error gave_up(std::string_view endpoint, std::string_view what, const Error& last, int attempts);

// Runs op() until it returns, or throws an Error that is not transient
// (rethrown as is), or fails `policy.attempts` times (then throws
// gave_up(...)). `sleep` waits between attempts (tests pass a recorder).
template <typename F>
auto with_retries(const RetryPolicy& policy, std::string_view endpoint, std::string_view what, F&& op,
                  const Sleeper& sleep = interruptible_sleep) -> decltype(op()) {
  const int attempts = policy.attempts < 1 ? 1 : policy.attempts;
  for (int attempt = 1;; ++attempt) {
    try {
      return op();
    } catch (const TransientError& e) {
      if (attempt >= attempts) throw gave_up(endpoint, what, e, attempts);
      sleep(backoff_delay(policy, attempt, -1.0));
    }
  }
}

}  // namespace mithril::storage
