// util/xxh3_avx2.cpp — XXH3-64 built for AVX2, for a process whose SIMD is
// capped at AVX2 (MITHRIL_ISA=avx2, util/simd_level.hpp) on a CPU with
// AVX-512, where libxxhash's own dispatch would run its AVX-512 code. The
// code is libxxhash's: its header compiled in its documented header-only mode
// (XXH_INLINE_ALL: every function static, under private names, so nothing
// here clashes with the shared library) with its AVX2 accumulator selected
// (XXH_VECTOR), the way libxxhash's xxh_x86dispatch.c builds its variants.
// Called only where the CPU has AVX2 (util/xxh3.cpp checks).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // (xxhash.h includes it only when the build targets AVX2)

// Everything below is built for AVX2: libxxhash's functions (static here)
// and the two entry points that call them. GCC and clang (the fuzz build)
// spell that differently.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif
#define XXH_INLINE_ALL
#define XXH_VECTOR 2  // XXH_AVX2
#include <xxhash.h>

namespace mithril::util::detail {

std::uint64_t xxh3_64_avx2(const void* data, std::size_t n) noexcept { return XXH3_64bits(data, n); }

// `state` is a libxxhash XXH3_state_t (the same struct, same header version).
void xxh3_update_avx2(void* state, const void* data, std::size_t n) noexcept {
  (void)XXH3_64bits_update(static_cast<XXH3_state_t*>(state), data, n);
}

}  // namespace mithril::util::detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
