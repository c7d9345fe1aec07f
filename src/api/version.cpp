#include "mithril/version.hpp"

#include "util/atomic_file.hpp"

namespace mithril {

const char* version() noexcept { return MITHRIL_VERSION; }

void remove_pending_outputs() noexcept { util::remove_all_pending_temporaries(); }

}  // namespace mithril
