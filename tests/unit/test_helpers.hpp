// Shared helpers for unit tests: a scratch directory removed at scope exit,
// file read/write shortcuts, test data and the code of a thrown mithril::Error.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mithril/error.hpp"
#include "util/bytes.hpp"

namespace mithril::test {

class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "mithril-test-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    m_path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return m_path; }
  std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

 private:
  std::filesystem::path m_path;
};

inline util::ByteVector read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<char> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  util::ByteVector out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size());
  return out;
}

inline void write_file(const std::filesystem::path& p, util::ByteSpan data) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// A text file, its folders made first.
inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// fp32 values that repeat every 97 (plus `phase`): chunks of them really
// compress (random bytes are stored raw).
inline util::ByteVector smooth_f32(std::size_t n, float phase = 0.f) {
  util::ByteVector out(n * 4);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = 0.01f * static_cast<float>(i % 97) + phase;
    std::memcpy(out.data() + 4 * i, &v, 4);
  }
  return out;
}

// The code of the mithril::Error that f() throws (a test failure if none).
inline Errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no mithril::Error thrown";
  return Errc::internal;
}

inline util::ByteVector random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  util::ByteVector v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

}  // namespace mithril::test
