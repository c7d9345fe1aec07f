// codec/rans_dispatch.cpp — which rANS kernel runs on this CPU.
//
// Vendor rules age badly (AVX2 gathers are slow on AMD Zen 1-3 and fast on
// Intel, Zen 4 gathers are in between, AVX-512 may be split into two 256-bit
// halves; hence two AVX2 decoders, avx2 with gathers and avx2x with scalar
// loads), so unless MITHRIL_RANS_KERNEL forces one, the first encode (or
// decode) times every available encoder (or decoder) on a small synthetic
// exponent plane and keeps the fastest (thread CPU time, best of 7): a few ms
// of CPU per direction, once per process, and a process that only decodes
// never times the encoders. All kernels produce the same bytes, so the
// choice can never change an output.
#include <algorithm>
#include <bit>
#include <ctime>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "codec/rans_kernels.hpp"
#include "util/simd_level.hpp"

namespace mithril::codec::rans {
namespace detail {
namespace {

bool cpu_has(Kernel k) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();  // in case we run before libgcc's constructor
  switch (k) {
    case Kernel::scalar: return true;
    case Kernel::avx2:
    case Kernel::avx2x:
      return util::simd_allows(util::SimdLevel::avx2) && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("popcnt");
    case Kernel::avx512:
      return util::simd_allows(util::SimdLevel::avx512) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt");
  }
  return false;
#else
  return k == Kernel::scalar;
#endif
}

// A bf16-like exponent plane: geometric around one exponent (~2 bits/byte).
std::vector<std::byte> sample_plane(std::size_t n) {
  std::vector<std::byte> v(n);
  std::uint64_t s = 0x9e3779b97f4a7c15ull;
  for (auto& b : v) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const int run = std::min(std::countl_zero(static_cast<std::uint32_t>(s >> 32) | 1u), 24);
    b = static_cast<std::byte>(124 - run + static_cast<int>(s & 1));
  }
  return v;
}

// This thread's CPU time: unlike wall time it does not count the time the
// thread waited for a core, so a busy machine does not skew the choice.
double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <class F>
double best_seconds(F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    const double t0 = thread_seconds();
    f();
    best = std::min(best, thread_seconds() - t0);
  }
  return best;
}

enum class Direction { encode, decode };

// The fastest available kernel for one direction: only that direction is
// timed, so decompression pays for decoder timings alone.
Kernel measure(Direction dir) {
  std::vector<Kernel> avail;
  // avx2x differs from avx2 only in its decoder: its encoder is not timed.
  for (Kernel k : k_all_kernels)
    if (cpu_has(k) && !(dir == Direction::encode && k == Kernel::avx2x)) avail.push_back(k);
  if (avail.size() == 1) return Kernel::scalar;
  constexpr std::size_t k_n = 128 * 1024;
  const auto plane = sample_plane(k_n);
  Histogram h{};
  for (std::byte b : plane) ++h[static_cast<std::uint8_t>(b)];
  std::vector<std::byte> block(k_n), out(k_n);
  std::size_t coded = 0;
  if (dir == Direction::decode) {
    const auto size = encode_with(plane, h, block, Kernel::scalar);
    if (!size) return avail.back();
    coded = *size;
  }
  const std::span<const std::byte> in(block.data(), coded);
  Kernel pick = avail.back();
  double best = 1e30;
  for (Kernel k : avail) {
    const double t = dir == Direction::encode ? best_seconds([&] { (void)encode_with(plane, h, out, k); })
                                              : best_seconds([&] { decode_with(in, out, k); });
    // Ties go to the later (wider) kernel only when clearly faster: 3%.
    if (t < best * 0.97) best = t, pick = k;
  }
  return pick;
}

Kernel choose(Direction dir) {
  if (const char* env = std::getenv("MITHRIL_RANS_KERNEL"); env && *env && std::string_view(env) != "auto") {
    // An unknown or unavailable name gets the best the CPU has; kernel_names()
    // (mithril --version -v) shows what runs.
    Kernel forced = Kernel::scalar;
    bool known = false;
    for (Kernel k : k_all_kernels)
      if (kernel_name(k) == env) forced = k, known = true;
    if (known && cpu_has(forced)) return forced;
  }
  return measure(dir);
}

}  // namespace

std::string_view kernel_name(Kernel k) {
  switch (k) {
    case Kernel::scalar: return "scalar";
    case Kernel::avx2: return "avx2";
    case Kernel::avx2x: return "avx2x";
    case Kernel::avx512: return "avx512";
  }
  return "?";
}

bool kernel_available(Kernel k) { return cpu_has(k); }

Kernel active_encode_kernel() {
  static const Kernel k = choose(Direction::encode);
  return k;
}

Kernel active_decode_kernel() {
  static const Kernel k = choose(Direction::decode);
  return k;
}

}  // namespace detail

KernelNames kernel_names() {
  return {detail::kernel_name(detail::active_encode_kernel()), detail::kernel_name(detail::active_decode_kernel())};
}

}  // namespace mithril::codec::rans
