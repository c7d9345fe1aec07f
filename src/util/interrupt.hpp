// util/interrupt.hpp — deferring SIGINT/SIGTERM while a remote upload runs.
//
// A local output is cleaned up from the signal handler (unlinking its
// temporary is async-signal-safe). A multipart upload to an object store is
// not: aborting it takes network calls. So while a DeferSignals object lives,
// the CLI's handler only records the signal (defer_signal); remote code polls
// interrupt_requested() (between parts, in curl's progress callback), throws,
// aborts the upload while unwinding, and the CLI then re-raises the signal
// (deferred_signal) so the exit status still says "killed by SIGINT". A second
// signal is not deferred: it kills at once.
#pragma once

namespace mithril::util {

class DeferSignals {
 public:
  DeferSignals() noexcept;
  ~DeferSignals();
  DeferSignals(const DeferSignals&) = delete;
  DeferSignals& operator=(const DeferSignals&) = delete;
};

// For the signal handler: true (signal recorded, handler should return) when
// a DeferSignals is alive and no signal was deferred yet. Async-signal-safe.
bool defer_signal(int sig) noexcept;
// The deferred signal, 0 if none.
int deferred_signal() noexcept;
bool interrupt_requested() noexcept;
// Throws Error(io, "interrupted by signal N") when a signal was deferred.
void throw_if_interrupted();

}  // namespace mithril::util
