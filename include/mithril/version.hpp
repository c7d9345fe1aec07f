// mithril/version.hpp — library version and process-wide helpers.
#pragma once

namespace mithril {

// "MAJOR.MINOR.PATCH" of this build.
const char* version() noexcept;

// Removes every output file still being written (their temporaries) — for a
// signal handler right before the process dies. Async-signal-safe.
void remove_pending_outputs() noexcept;

}  // namespace mithril
