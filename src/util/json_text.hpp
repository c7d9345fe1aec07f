// util/json_text.hpp — UTF-8 checks and JSON text written by hand, for the
// JSON this project writes on a hot path (the .mcp index, a safetensors
// header): nlohmann::json builds a tree of maps first (~0.2 ms for a
// 100-tensor index, a serial step of every compression).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mithril::util {

// Offset of the first byte that is not part of well-formed UTF-8 (Unicode
// 15, table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF),
// or npos. Same acceptance as Rust's core::str::from_utf8.
std::size_t invalid_utf8_at(std::string_view s) noexcept;
inline bool valid_utf8(std::string_view s) noexcept { return invalid_utf8_at(s) == std::string_view::npos; }

// `s` with each byte that is not part of well-formed UTF-8 replaced by
// U+FFFD: for names shown to people (a Linux file name is any bytes).
std::string utf8_or_replacement(std::string_view s);

// `s` (valid UTF-8) as a JSON string, escaped as serde_json and
// nlohmann::json::dump() do: '"' and '\\' escaped, the control characters as
// \b \t \n \f \r or \u00xx (lowercase hex), all else (DEL and non-ASCII
// included) verbatim.
void append_json_string(std::string& out, std::string_view s);

// `v` in decimal.
void append_json_number(std::string& out, std::uint64_t v);

}  // namespace mithril::util
