#include "mithril/version.hpp"

#include "util/atomic_file.hpp"
#include "util/interrupt.hpp"

namespace mithril {

const char* version() noexcept { return MITHRIL_VERSION; }

void remove_pending_outputs() noexcept { util::remove_all_pending_temporaries(); }

bool defer_signal(int sig) noexcept { return util::defer_signal(sig); }

int deferred_signal() noexcept { return util::deferred_signal(); }

}  // namespace mithril
