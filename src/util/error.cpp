#include "mithril/error.hpp"

namespace mithril {

std::string_view errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::io: return "io";
    case Errc::corrupt: return "corrupt";
    case Errc::unsupported: return "unsupported";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_found: return "not_found";
    case Errc::exists: return "exists";
    case Errc::remote_unavailable: return "remote_unavailable";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

}  // namespace mithril
