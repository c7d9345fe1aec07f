// mithril/error.hpp — the one error type of the library.
//
// Every failure the library reports is a mithril::Error carrying a code and a
// message with context (file, tensor, chunk, offset). The library never aborts
// on bad input; the CLI maps codes to exit statuses in one place
// (src/cli/main.cpp), the Python bindings to exception classes in one place.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace mithril {

enum class Errc {
  io,                  // the OS refused a read, write, open, rename, ...
  corrupt,             // input fails a checksum, a digest or a structural rule
  unsupported,         // well-formed but not something this version handles
  invalid_argument,    // the caller asked for something impossible
  not_found,           // a named thing does not exist
  exists,              // refusing to overwrite without force
  remote_unavailable,  // a remote tier could not be reached
  internal,            // a bug: an invariant of our own was broken
};

// Short stable name of a code ("io", "corrupt", ...).
std::string_view errc_name(Errc code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), m_code(code) {}
  Errc code() const noexcept { return m_code; }

 private:
  Errc m_code;
};

}  // namespace mithril
