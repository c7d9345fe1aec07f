#include "util/xxh3.hpp"

#include <xxhash.h>

#include <new>
#include <string_view>

// On x86-64, libxxhash's plain XXH3 entry points run its baseline (SSE2)
// build; the _dispatch ones pick AVX2 or AVX-512 at run time and give the
// same hashes: 18.5 against 8.1 GiB/s one-shot and 19.2 against 9.3 streaming
// on 512 KiB (Intel Xeon with AVX-512, libxxhash 0.8.1).
// MITHRIL_ISA (util/simd_level.hpp) caps that: at sse2 or below the
// baseline build runs, at avx2 on a CPU with AVX-512 our own AVX2 build of
// libxxhash's header (util/xxh3_avx2.cpp).
#if defined(__x86_64__) && defined(__GNUC__) && __has_include(<xxh_x86dispatch.h>)
#define MITHRIL_XXH3_DISPATCH 1
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#endif

#include "util/simd_level.hpp"

namespace mithril::util {

namespace {

using OneShot = XXH64_hash_t (*)(const void*, std::size_t);
using Update = void (*)(XXH3_state_t*, const void*, std::size_t);

void update_baseline(XXH3_state_t* s, const void* p, std::size_t n) { (void)XXH3_64bits_update(s, p, n); }

struct Kernel {
  OneShot one_shot = XXH3_64bits;
  Update update = update_baseline;
  std::string_view name = "sse2";
};

Kernel pick() noexcept {
  Kernel k;
#ifdef MITHRIL_XXH3_DISPATCH
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2");
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx2 || !simd_allows(SimdLevel::avx2)) return k;
  if (avx512 && !simd_allows(SimdLevel::avx512)) {
    k.one_shot = detail::xxh3_64_avx2;
    k.update = [](XXH3_state_t* s, const void* p, std::size_t n) { detail::xxh3_update_avx2(s, p, n); };
    k.name = "avx2";
    return k;
  }
  // libxxhash picks AVX-512 where the CPU (and OS) has AVX512F, else AVX2.
  k.one_shot = XXH3_64bits_dispatch;
  k.update = [](XXH3_state_t* s, const void* p, std::size_t n) { (void)XXH3_64bits_update_dispatch(s, p, n); };
  k.name = avx512 ? "avx512" : "avx2";
#endif
  return k;
}

const Kernel& kernel() noexcept {
  static const Kernel k = pick();
  return k;
}

}  // namespace

std::string_view xxh3_kernel() noexcept { return kernel().name; }

std::uint64_t xxh3_64(ByteSpan data) noexcept { return kernel().one_shot(data.data(), data.size()); }

struct Xxh3Stream::State {
  XXH3_state_t* s = nullptr;
  State() : s(XXH3_createState()) {
    if (!s) throw std::bad_alloc();
  }
  ~State() { XXH3_freeState(s); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

Xxh3Stream::Xxh3Stream() : m_state(std::make_unique<State>()) { reset(); }
Xxh3Stream::~Xxh3Stream() = default;
Xxh3Stream::Xxh3Stream(Xxh3Stream&&) noexcept = default;
Xxh3Stream& Xxh3Stream::operator=(Xxh3Stream&&) noexcept = default;

// XXH3_64bits_reset/update return XXH_ERROR only for a null state, which
// the constructor rules out.
void Xxh3Stream::reset() noexcept { (void)XXH3_64bits_reset(m_state->s); }
void Xxh3Stream::update(ByteSpan data) noexcept { kernel().update(m_state->s, data.data(), data.size()); }
std::uint64_t Xxh3Stream::digest() const noexcept { return XXH3_64bits_digest(m_state->s); }

}  // namespace mithril::util
