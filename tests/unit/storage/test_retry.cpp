#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "storage/retry.hpp"
#include "util/interrupt.hpp"

namespace mithril::storage {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, ExponentialCappedAndJittered) {
  RetryPolicy p;
  p.initial_delay = milliseconds(100);
  p.max_delay = milliseconds(1000);
  p.multiplier = 2.0;
  p.jitter = 0.5;
  // u = 0: no jitter.
  EXPECT_EQ(backoff_delay(p, 1, 0.0), milliseconds(100));
  EXPECT_EQ(backoff_delay(p, 2, 0.0), milliseconds(200));
  EXPECT_EQ(backoff_delay(p, 3, 0.0), milliseconds(400));
  EXPECT_EQ(backoff_delay(p, 4, 0.0), milliseconds(800));
  EXPECT_EQ(backoff_delay(p, 5, 0.0), milliseconds(1000));
  EXPECT_EQ(backoff_delay(p, 30, 0.0), milliseconds(1000));
  // Jitter shortens by up to `jitter` of the delay.
  EXPECT_EQ(backoff_delay(p, 2, 0.5), milliseconds(150));
  EXPECT_EQ(backoff_delay(p, 5, 0.999).count(), 500);
  // Drawn jitter stays in range.
  for (int i = 0; i < 100; ++i) {
    const auto d = backoff_delay(p, 3, -1.0);
    EXPECT_GE(d, milliseconds(200));
    EXPECT_LE(d, milliseconds(400));
  }
}

struct Recorder {
  std::vector<milliseconds> delays;
  Sleeper sleeper() {
    return [this](milliseconds d) { delays.push_back(d); };
  }
};

TEST(Retry, SucceedsAfterTransientFailures) {
  RetryPolicy p;
  p.attempts = 4;
  p.jitter = 0;
  Recorder rec;
  int calls = 0;
  const int v = with_retries(
      p, "redis://h:1/0", "GET k",
      [&] {
        if (++calls < 3) throw TransientError("connection refused");
        return 42;
      },
      rec.sleeper());
  EXPECT_EQ(v, 42);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(rec.delays, (std::vector<milliseconds>{milliseconds(100), milliseconds(200)}));
}

TEST(Retry, GivesUpAfterTheLastAttemptNamingTheEndpoint) {
  RetryPolicy p;
  p.attempts = 3;
  p.jitter = 0;
  Recorder rec;
  int calls = 0;
  try {
    with_retries(
        p, "http://127.0.0.1:9/bucket", "PUT k",
        [&] {
          ++calls;
          throw TransientError("Connection refused");
        },
        rec.sleeper());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::remote_unavailable);
    EXPECT_EQ(std::string(e.what()), "http://127.0.0.1:9/bucket: PUT k: Connection refused (gave up after 3 attempts)");
  }
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(rec.delays.size(), 2u);  // no sleep after the last attempt
}

TEST(Retry, FinalErrorsAreNotRetried) {
  RetryPolicy p;
  Recorder rec;
  int calls = 0;
  EXPECT_THROW(with_retries(
                   p, "e", "w",
                   [&] {
                     ++calls;
                     throw Error(Errc::remote_unavailable, "e: access denied (HTTP 403)");
                   },
                   rec.sleeper()),
               Error);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(rec.delays.empty());
}

TEST(Retry, SingleAttemptPolicy) {
  RetryPolicy p;
  p.attempts = 0;  // treated as 1
  Recorder rec;
  int calls = 0;
  try {
    with_retries(
        p, "e", "w",
        [&] {
          ++calls;
          throw TransientError("timeout");
        },
        rec.sleeper());
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "e: w: timeout");
  }
  EXPECT_EQ(calls, 1);
}

TEST(Interrupt, DeferredOnlyWhileSomeoneCanCleanUp) {
  EXPECT_FALSE(util::defer_signal(15));  // nobody defers: the handler kills at once
  EXPECT_EQ(util::deferred_signal(), 0);
  EXPECT_NO_THROW(util::throw_if_interrupted());
  EXPECT_NO_THROW(interruptible_sleep(milliseconds(1)));
}

}  // namespace
}  // namespace mithril::storage
