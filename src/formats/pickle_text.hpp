// formats/pickle_text.hpp — text helpers shared by the unpickler and its
// renderer (internal to src/formats).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "util/json_text.hpp"

namespace mithril::formats::detail {

// Printable rendering of untrusted text for error messages: printable ASCII
// kept, everything else \xNN; cut after about `max_chars` characters.
std::string escape(std::string_view s, std::size_t max_chars = 200);

// Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing past U+10FFFF.
using util::valid_utf8;

// Latin-1 bytes of valid UTF-8 text; false if a code point exceeds U+00FF.
bool utf8_to_latin1(std::string_view s, std::string& out);

// Python's repr() of a str (is_bytes false) or bytes (true, without the "b").
std::string quote(std::string_view s, bool is_bytes, std::size_t max_chars);

}  // namespace mithril::formats::detail
