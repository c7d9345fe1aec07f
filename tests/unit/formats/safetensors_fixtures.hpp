// Helpers shared by the safetensors unit tests: hand-built files, error
// expectations and tensor sets.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/safetensors.hpp"
#include "mithril/error.hpp"
#include "test_helpers.hpp"

namespace mithril::test::st {

using namespace mithril::formats;

inline constexpr const char* k_file = "bad.safetensors";

// Concatenation by appending: `"literal" + std::string&&` trips a GCC 12
// -Wrestrict false positive under -Werror.
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  (s.append(std::string_view(parts)), ...);
  return s;
}

inline util::ByteVector raw(std::string_view bytes) {
  const auto s = util::as_bytes(bytes);
  return {s.begin(), s.end()};
}

// A safetensors file from its parts; `n` overrides the header length field.
// (Assembled in a std::string: appending to a ByteVector trips GCC 12's
// -Warray-bounds/-Wstringop-overflow false positives under -Werror.)
inline util::ByteVector st_file(std::string_view header, std::string_view data = {},
                                std::optional<std::uint64_t> n = std::nullopt) {
  std::string s(8, '\0');
  const std::uint64_t length = n ? *n : header.size();
  std::memcpy(s.data(), &length, sizeof length);  // little-endian host (util/bytes.hpp)
  s.append(header);
  s.append(data);
  return raw(s);
}

// "<accepted>" if the file parses, else the message of the corrupt error
// (or a note that the error code was wrong).
inline std::string corrupt_message(const util::ByteVector& file) {
  try {
    parse_safetensors(file, k_file);
  } catch (const Error& e) {
    if (e.code() != Errc::corrupt) return cat("<wrong code ", errc_name(e.code()), "> ", e.what());
    return e.what();
  }
  return "<accepted>";
}

// Expects Error(corrupt) whose message starts with the file name and holds
// every given fragment (the tensor, the rule).
#define EXPECT_CORRUPT(file, ...)                                                               \
  do {                                                                                          \
    const std::string m_ = ::mithril::test::st::corrupt_message(file);                          \
    EXPECT_EQ(m_.rfind(::mithril::test::st::cat(::mithril::test::st::k_file, ": "), 0), 0u) << m_; \
    for (std::string_view part_ : {__VA_ARGS__}) {                                              \
      EXPECT_NE(m_.find(part_), std::string::npos) << "missing \"" << part_ << "\" in: " << m_; \
    }                                                                                           \
  } while (0)

// One tensor entry of a header, from JSON fragments.
inline std::string entry(std::string_view name, std::string_view dtype, std::string_view shape,
                         std::uint64_t begin, std::uint64_t end) {
  return cat("\"", name, "\":{\"dtype\":\"", dtype, "\",\"shape\":", shape, ",\"data_offsets\":[",
             std::to_string(begin), ",", std::to_string(end), "]}");
}

// A header object from entries.
inline std::string obj(std::initializer_list<std::string> entries) {
  std::string s = "{";
  for (const auto& e : entries) {
    if (s.size() > 1) s += ',';
    s += e;
  }
  s += '}';
  return s;
}

// A tensor that owns its bytes (TensorView only borrows).
struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
  util::ByteVector data;
};

inline std::vector<TensorView> views(const std::vector<OwnedTensor>& ts) {
  std::vector<TensorView> v;
  for (const auto& t : ts) v.push_back({t.name, t.dtype, t.shape, t.data});
  return v;
}

// Random contents of exactly the size the shape needs.
inline OwnedTensor make_tensor(std::string name, DType dtype, std::vector<std::uint64_t> shape,
                               std::uint64_t seed) {
  std::uint64_t count = 1;
  for (auto d : shape) count *= d;
  const auto bytes = static_cast<std::size_t>(count * dtype_info(dtype).bits / 8);
  return {std::move(name), dtype, std::move(shape), test::random_bytes(bytes, seed)};
}

// One tensor of every dtype, with shapes that fill whole bytes.
inline std::vector<OwnedTensor> every_dtype_tensors() {
  std::vector<OwnedTensor> ts;
  for (std::size_t i = 0; i < k_dtype_count; ++i) {
    const auto t = static_cast<DType>(i);
    ts.push_back(make_tensor(cat("t_", dtype_info(t).name), t, {3, 4}, i));
  }
  ts.push_back(make_tensor("scalar", DType::F64, {}, 100));
  ts.push_back(make_tensor("empty", DType::BF16, {0, 7}, 101));
  ts.push_back(make_tensor("a_second_f32", DType::F32, {5}, 102));
  ts.push_back(make_tensor("quote\"back\\slash\nnl\x01\x1f\x7f/é", DType::U8, {2}, 103));
  return ts;
}

}  // namespace mithril::test::st
