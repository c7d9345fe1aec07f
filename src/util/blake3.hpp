// util/blake3.hpp — BLAKE3 (https://github.com/BLAKE3-team/BLAKE3-specs),
// implemented in the project (Debian 12 packages no BLAKE3 library).
//
// Hash, keyed-hash and derive-key modes, extendable output, an incremental
// hasher, and a multi-threaded one-shot for large inputs (BLAKE3's tree makes
// subtrees independent). SIMD kernels (SSE4.1/AVX2/AVX-512) are chosen at run
// time; every kernel gives the same output as the portable one.
//
// Thread-safety: a Blake3 object is not shared between threads; the free
// functions are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/bytes.hpp"

namespace mithril::util {

using Digest = std::array<std::uint8_t, 32>;

class Blake3 {
 public:
  Blake3();  // plain hash mode
  static Blake3 keyed(std::span<const std::uint8_t, 32> key);
  static Blake3 derive_key(std::string_view context);

  void update(ByteSpan data);
  // Extendable output: fills out with the first out.size() bytes of output.
  // Does not change the state; update() may continue afterwards.
  void finalize(std::span<std::uint8_t> out) const;
  Digest digest() const;

  struct State;  // implementation detail, defined in blake3.cpp

 private:
  std::array<std::uint32_t, 8> m_key{};
  std::uint32_t m_flags = 0;
  // chunk state
  std::array<std::uint32_t, 8> m_cv{};
  std::array<std::uint8_t, 64> m_block{};
  std::uint8_t m_block_len = 0;
  std::uint8_t m_blocks_compressed = 0;
  std::uint64_t m_chunk_counter = 0;
  // stack of subtree chaining values, one per level
  std::array<std::array<std::uint32_t, 8>, 54> m_stack{};
  std::uint8_t m_stack_len = 0;
  friend struct State;
};

Digest blake3(ByteSpan data);
// Same digest as blake3(data), computed with up to `threads` threads
// (0 = all cores). Worth it above a few MiB.
Digest blake3_parallel(ByteSpan data, unsigned threads = 0);

std::string to_hex(std::span<const std::uint8_t> bytes);
// Parses lowercase/uppercase hex of exactly 2 * out.size() digits into out;
// false on anything else.
bool parse_hex(std::string_view hex, std::span<std::uint8_t> out);
// Parses lowercase/uppercase hex of exactly 64 digits; false on anything else.
bool parse_hex_digest(std::string_view hex, Digest& out);

namespace detail {
// The multi-chunk kernel in use ("avx512", "avx2" or "portable"), and a
// switch for tests and benchmarks; false if the CPU lacks it. Not thread-safe.
std::string_view blake3_kernel();
bool set_blake3_kernel(std::string_view name);

// Building blocks of the tree (plain hash mode) for Blake3Tree
// (util/blake3_tree.hpp), which hashes a file's pieces on several threads.
using ChainingValue = std::array<std::uint32_t, 8>;
ChainingValue blake3_parent_cv(const ChainingValue& left, const ChainingValue& right);
// Chaining values of whole 1 KiB chunks anywhere in memory: chunk i at
// chunks[i], chunk number counters[i] (none of them the root), through the
// SIMD kernel as one batch.
void blake3_chunk_cvs(const std::uint8_t* const* chunks, const std::uint64_t* counters, std::size_t n,
                      ChainingValue* out);
// The largest aligned power-of-two subtrees that tile whole chunks
// [first_chunk, first_chunk + n_chunks), left to right (sizes rise, then
// fall): their first chunk, level (2^level chunks) and chaining value.
// `data` is chunk first_chunk's bytes. All their leaves go through the SIMD
// kernel together and each level's parents of all subtrees in one pass, so a
// run of chunks at an unaligned position (a tensor inside a file) costs about
// what an aligned one does. REQUIRES: the run does not include the root.
struct SubtreeCv {
  std::uint64_t first_chunk = 0;
  unsigned level = 0;
  ChainingValue cv{};
};
void blake3_aligned_subtrees(const std::uint8_t* data, std::uint64_t first_chunk, std::uint64_t n_chunks,
                             std::vector<SubtreeCv>& out);
// The digest of an input whose complete left subtrees are `stack` (largest
// first, as the incremental hasher keeps them) followed by its last chunk
// (0..1024 bytes, chunk number `last_counter`).
Digest blake3_root(std::span<const ChainingValue> stack, ByteSpan last_chunk, std::uint64_t last_counter);
}  // namespace detail

}  // namespace mithril::util
