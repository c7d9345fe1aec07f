// The speed this process gets from its core at the moment: the rate of a
// chain of dependent integer adds (one a cycle on every x86-64 and Arm core),
// in billions a second — about the clock, as the host lends it.
//
// On a shared virtual machine it moves with the host's load: on one AMD EPYC
// Zen 3 guest it read from 1.2 to 2.5 within minutes (the vCPU's nominal
// 2.45 GHz), and every timing moved with it while same-run ratios held. The
// benchmarks print it beside their results so that two sessions' absolute
// numbers can be read against each other (docs/benchmarks.md, session 54).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace mithril::bench {

struct HostClock {
  double best_ghz = 0;    // the fastest window
  double median_ghz = 0;  // the median window
  int windows = 0;
  double window_ms = 0;
};

inline HostClock measure_host_clock(int windows = 7,
                                    std::chrono::microseconds window = std::chrono::microseconds(10000)) {
  using clock = std::chrono::steady_clock;
  constexpr std::uint64_t k_batch = 1u << 16;
  std::vector<double> rates;
  std::uint64_t x = 0;
  for (int w = 0; w < windows; ++w) {
    std::uint64_t adds = 0;
    const auto t0 = clock::now();
    auto t = t0;
    do {
      for (std::uint64_t i = 0; i < k_batch; ++i) {
        x += 1;
        asm volatile("" : "+r"(x));  // one add a link: the compiler can neither fold nor widen the chain
      }
      adds += k_batch;
      t = clock::now();
    } while (t - t0 < window);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t - t0).count();
    rates.push_back(static_cast<double>(adds) / static_cast<double>(ns));
  }
  std::sort(rates.begin(), rates.end());
  HostClock c;
  c.windows = windows;
  c.window_ms = static_cast<double>(window.count()) / 1000.0;
  if (rates.empty()) return c;
  c.best_ghz = rates.back();
  c.median_ghz = rates[rates.size() / 2];
  return c;
}

inline std::string describe(const HostClock& c) {
  char text[128];
  std::snprintf(text, sizeof text, "%.2f GHz best, %.2f median (dependent adds, %d windows of %g ms)", c.best_ghz,
                c.median_ghz, c.windows, c.window_ms);
  return text;
}

}  // namespace mithril::bench
