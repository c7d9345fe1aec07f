#include "util/interrupt.hpp"

#include <atomic>
#include <string>

#include "mithril/error.hpp"

namespace mithril::util {
namespace {

std::atomic<int> g_deferrers{0};
std::atomic<int> g_signal{0};

}  // namespace

DeferSignals::DeferSignals() noexcept { g_deferrers.fetch_add(1); }
DeferSignals::~DeferSignals() { g_deferrers.fetch_sub(1); }

bool defer_signal(int sig) noexcept {
  if (g_deferrers.load() <= 0) return false;
  int expected = 0;
  return g_signal.compare_exchange_strong(expected, sig);
}

int deferred_signal() noexcept { return g_signal.load(); }
bool interrupt_requested() noexcept { return g_signal.load() != 0; }

void throw_if_interrupted() {
  if (const int s = g_signal.load()) throw Error(Errc::io, "interrupted by signal " + std::to_string(s));
}

}  // namespace mithril::util
