// tests/fuzz/fuzz_common.hpp — helpers shared by the libFuzzer targets.
//
// Every target defines LLVMFuzzerTestOneInput (and, where it needs one-time
// setup, LLVMFuzzerInitialize). Built with clang's -fsanitize=fuzzer (CMake
// option MITHRIL_FUZZ, scripts/fuzz) it is a fuzzer; built without it, it is
// linked with standalone_main.cpp into a program that replays files and
// directories (the seed corpus and the regression inputs, every ctest run).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "util/byte_io.hpp"
#include "util/bytes.hpp"

namespace mithril::fuzz {

// A broken contract: abort (a sanitizer or libFuzzer reports it and keeps
// the input).
inline void check(bool ok) {
  if (!ok) __builtin_trap();
}

inline util::ByteSpan as_span(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

// Random-access bytes in memory, for the readers that take a ByteSource.
class MemorySource final : public util::ByteSource {
 public:
  MemorySource(util::ByteSpan bytes, std::string name) : m_bytes(bytes), m_name(std::move(name)) {}
  std::uint64_t size() const noexcept override { return m_bytes.size(); }
  const std::string& name() const noexcept override { return m_name; }
  util::ByteSpan read(std::uint64_t offset, std::size_t length, util::ByteVector&) const override {
    if (offset > m_bytes.size() || length > m_bytes.size() - offset) throw_truncated(offset, length);
    m_bytes_read += length;
    return m_bytes.subspan(static_cast<std::size_t>(offset), length);
  }
  bool memory_resident() const noexcept override { return true; }

 private:
  util::ByteSpan m_bytes;
  std::string m_name;
};

// A private scratch directory for targets whose parser reads files
// (created once per process, removed at exit).
const std::filesystem::path& scratch_dir();

// Writes `bytes` to `path` (replacing it).
void write_file(const std::filesystem::path& path, util::ByteSpan bytes);

}  // namespace mithril::fuzz
