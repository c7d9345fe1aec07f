// mithril/version.hpp — library version and process-wide helpers.
#pragma once

namespace mithril {

// "MAJOR.MINOR.PATCH" of this build.
const char* version() noexcept;

// Removes every output file still being written (their temporaries) — for a
// signal handler right before the process dies. Async-signal-safe.
void remove_pending_outputs() noexcept;

// For the same handler: true when a remote upload is in flight and will abort
// itself (network calls are not async-signal-safe); the handler then returns
// and the caller re-raises deferred_signal() once the command has unwound.
// A second signal is not deferred. Async-signal-safe.
bool defer_signal(int sig) noexcept;
// The signal defer_signal() accepted, 0 if none.
int deferred_signal() noexcept;

}  // namespace mithril
