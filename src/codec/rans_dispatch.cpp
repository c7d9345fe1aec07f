// codec/rans_dispatch.cpp — which rANS kernel runs on this CPU.
//
// Vendor rules age badly (AVX2 gathers are slow on AMD Zen 1-3 and fast on
// Intel, Zen 4 gathers are in between, AVX-512 may be split into two 256-bit
// halves; hence two AVX2 decoders, avx2 with gathers and avx2x with scalar
// loads, two AVX-512 ones likewise, avx512 and avx512x, and two AVX2
// encoders), so unless MITHRIL_RANS_KERNEL forces one, the first encode (or
// decode) times every available encoder (or decoder) and keeps the fastest
// (thread CPU time, best of 6, the kernels taking turns), once per process;
// a process that only decodes never times the encoders. Only the kernels'
// rounds are timed, on a synthetic bf16 exponent plane of 64 KiB, its second
// half as pair symbols (sample_plane), with the tables built once
// (KernelBench): ~0.4-0.9 ms a direction on AMD Zen 3. Timing encode() and decode() whole, as before,
// needed 256 KiB (the planner gives 64 lanes only from about that size) and
// cost 2-4 ms a direction (`mithril --version -v`, both directions, `perf
// stat -r 30`: 10.2-11.9 ms before, 6.4-7.7 after, 4.6-6.4 with
// MITHRIL_RANS_KERNEL set); the choice is the same (30 of 30 processes:
// avx2x both ways, as before).
// MITHRIL_ISA (util/simd_level.hpp) takes kernels above its level out of the
// running. All kernels produce the same bytes, so the choice can never change
// an output. A choice that two processes' timings agreed on is remembered for
// the next processes of the same build on the same CPU (util/kernel_memo.hpp):
// timing it cost a decompression ~1 ms (AMD Zen 4, `perf stat -r 40`, a
// 256 KiB bf16 file: 5.0 ms timed, 4.0 ms with the kernel forced).
#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <ctime>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/rans_kernels.hpp"
#include "util/kernel_memo.hpp"
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
    case Kernel::avx512x:
      return util::simd_allows(util::SimdLevel::avx512) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt");
  }
  return false;
#else
  return k == Kernel::scalar;
#endif
}

// The exponent plane of bf16 weights ~ N(0, 0.02), rotl1-grouped (2.5
// bits/byte, ~20 symbols), as real weights have: the kernels' relative speed
// depends on it (a geometric sample of ~2 bits/byte timed the avx2 and avx2x
// encoders alike, which differ by 15% on real planes). The normal values are
// sums of four uniform ones; only timing depends on these bytes, never an
// output. The sample is made in every process that codes, so its first 16
// KiB are drawn and then repeated: drawing all 256 KiB took 1.55 ms of the
// ~4.5 ms a choice cost (AMD Zen 3), 16 KiB and copies 0.4 ms, and each
// kernel encodes and decodes the repeated sample in the same time as a
// drawn one (best of 30, three runs: avx2 0.47-0.52 / 0.35-0.41 ms, avx2x
// 0.27-0.29 / 0.27 ms either way).
std::vector<std::byte> sample_plane(std::size_t n) {
  constexpr std::size_t k_period = 16 * 1024;
  std::vector<std::byte> v(n);
  std::uint64_t s = 0x9e3779b97f4a7c15ull;
  constexpr float k_scale = 0.02f / (65536.0f * 0.57735027f);  // sd of the sum: 65536 * sqrt(4 / 12)
  for (auto& b : std::span(v).first(std::min(n, k_period))) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const auto sum = static_cast<std::int32_t>((s & 0xffff) + ((s >> 16) & 0xffff) + ((s >> 32) & 0xffff) + (s >> 48));
    const float x = static_cast<float>(sum - 2 * 65536) * k_scale;
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    const auto h = static_cast<std::uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);  // bf16, nearest even
    b = static_cast<std::byte>(static_cast<std::uint16_t>((h << 1) | (h >> 15)) >> 8);
  }
  // The second half as rans_pairs codes an exponent plane (the default
  // level's coding of most of them): each byte's rank among the values (15
  // for the rarer ones), two ranks a symbol, ~5.4 bits a symbol where the
  // bytes have ~2.5: twice the renormalisations a symbol. The kernels rank
  // differently on the two: on AMD Zen 4 the AVX-512 encoder coded the
  // exponent bytes 1.15x as fast as avx2x but pair symbols 0.70x (bench_rans
  // kernel:5 with each forced, 1 MiB blocks: 1.39 against 1.94-2.03 GB/s),
  // and a sample of exponent bytes alone picked it: compression in the
  // pipeline then took 4-17% longer than with avx2x (bench_pipeline, one
  // thread: bf16 file 38.7 against 33.5 ms, a 12-layer bf16 transformer of
  // 128 KiB tensors 10.1 against 8.8, fp32 LoRA tensors 11.4 against 10.9;
  // session 41).
  const std::size_t half = std::min(n, k_period) / 2;
  std::array<std::uint32_t, 256> count{};
  for (std::size_t i = 0; i < half; ++i) ++count[static_cast<std::uint8_t>(v[i])];
  std::array<std::uint8_t, 256> order{};
  for (unsigned b = 0; b < 256; ++b) order[b] = static_cast<std::uint8_t>(b);
  std::stable_sort(order.begin(), order.end(), [&](std::uint8_t a, std::uint8_t b) { return count[a] > count[b]; });
  std::array<std::uint8_t, 256> rank{};
  rank.fill(15);
  for (unsigned r = 0; r < 15; ++r) rank[order[r]] = static_cast<std::uint8_t>(r);
  for (std::size_t i = 0; i < half; ++i)
    v[half + i] = static_cast<std::byte>((rank[static_cast<std::uint8_t>(v[(2 * i) % half])] << 4) |
                                         rank[static_cast<std::uint8_t>(v[(2 * i + 1) % half])]);
  for (std::size_t i = k_period; i < n; i += k_period)
    std::memcpy(v.data() + i, v.data(), std::min(k_period, n - i));
  return v;
}

// This thread's CPU time: unlike wall time it does not count the time the
// thread waited for a core, so a busy machine does not skew the choice.
double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

enum class Direction { encode, decode };

// The sample coded as the kernels see it: 64 lanes, scale 12 (the packed
// decode table), the tables built once; only the kernels' rounds are timed.
struct KernelBench {
  static constexpr unsigned k_lanes_log2 = k_max_lanes_log2;
  static constexpr std::size_t k_lanes = std::size_t{1} << k_lanes_log2;
  static constexpr unsigned k_scale = 12;
  std::vector<std::byte> plane;
  std::size_t rounds = 0;
  EncTables enc;
  DecTables dec;
  std::vector<std::uint8_t> words;  // room for the worst case: 2 bytes a symbol
  std::uint32_t states[k_max_lanes] = {};
  const std::uint8_t* words_begin = nullptr;  // where the last encode's words start
  std::vector<std::uint8_t> out;

  explicit KernelBench(std::size_t n) : plane(sample_plane(n)), rounds(n / k_lanes), words(2 * n), out(n) {
    Histogram h{};
    for (std::byte b : plane) ++h[static_cast<std::uint8_t>(b)];
    Freqs freq;
    normalize(h, plane.size(), k_scale, freq);
    build_encoder(freq, k_scale, enc);
    build_decoder(freq, k_scale, dec);
  }
  // Every round, backwards; false if the kernel left any (it cannot here).
  // k has a 64-lane encoder (measure() times no other).
  bool encode(Kernel k) {
    const EncodeRoundsFn fn = encode_rounds(k, k_lanes_log2);
    EncodeCursor c;
    for (auto& x : c.x) x = k_state_low;
    c.p = words.data() + words.size();
    c.floor = words.data();
    c.round = rounds;
    fn(reinterpret_cast<const std::uint8_t*>(plane.data()), enc, c);
    std::memcpy(states, c.x, sizeof states);
    words_begin = c.p;
    return c.round == 0;
  }
  // The rounds of the last encode, forwards (the kernel stops 2 * lanes
  // bytes before the end of the words: the same rounds for every kernel).
  // k has a 64-lane decoder.
  void decode(Kernel k) {
    const DecodeRoundsFn fn = decode_rounds(k, k_lanes_log2, true);
    DecodeCursor c;
    std::memcpy(c.x, states, sizeof states);
    c.p = words_begin;
    c.end = words.data() + words.size();
    c.out = out.data();
    c.round = 0;
    c.rounds = rounds;
    fn(dec, c);
  }
};

struct Choice {
  Kernel kernel;
  KernelSource source;
};

// The fastest available kernel for one direction: only that direction is
// timed, so decompression pays for decoder timings alone; remembered from an
// earlier process where one timed the same candidates.
Choice measure(Direction dir) {
  // The scalar kernels ran 2.5-4x slower than every vector kernel on every
  // CPU measured (Intel Xeon AVX-512, AMD Zen 3 and Zen 5): they are not
  // timed where a vector kernel exists, which halves the cost of choosing.
  // 64 KiB: 1024 rounds of the 64 lanes that real planes of 256 KiB and more
  // are coded with (the kernels rank differently with fewer lanes).
  //
  // The order of preference, where the sample times kernels alike (within
  // 3%): avx512x before avx2x. On AMD Zen 4 the two decode this sample in
  // the same time (24.5 against 24.8 us, quiet, four processes), yet avx512x
  // decodes planes of one symbol a byte 5-8% faster (bench_rans kernel:7
  // against kernel:3, bf16 exponents, fp16 high bytes and MiniLM's exponents,
  // 1 and 16 MiB blocks, medians of 10 interleaved) and pair symbols as fast:
  // decompression without the digest, one thread, medians of five
  // alternations, fp16 17.3 -> 16.9 ms, bf16 12.8 -> 12.2, MiniLM 20.8 ->
  // 20.6, AdamW state 49.3 -> 49.0 (session 45). avx512x encodes with
  // avx512's encoder: it is timed once, as avx512.
  constexpr unsigned k_lanes_log2 = KernelBench::k_lanes_log2;
  constexpr Kernel k_preference[] = {Kernel::avx2, Kernel::avx512x, Kernel::avx2x, Kernel::avx512};
  std::vector<Kernel> avail;
  for (Kernel k : k_preference)
    if (cpu_has(k) && !(dir == Direction::encode && k == Kernel::avx512x) &&
        (dir == Direction::encode ? encode_rounds(k, k_lanes_log2) != nullptr
                                  : decode_rounds(k, k_lanes_log2, true) != nullptr))
      avail.push_back(k);
  if (avail.empty()) return {Kernel::scalar, KernelSource::only};
  if (avail.size() == 1) return {avail.front(), KernelSource::only};
  std::string question = dir == Direction::encode ? "rans-encode" : "rans-decode";
  for (std::size_t i = 0; i < avail.size(); ++i) question += (i ? ',' : ' ') + std::string(kernel_name(avail[i]));
  if (const auto answer = util::recall_kernel(question))
    for (Kernel k : avail)
      if (kernel_name(k) == *answer) return {k, KernelSource::remembered};
  KernelBench bench(64 * 1024);
  if (dir == Direction::decode && !bench.encode(avail.back())) return {avail.back(), KernelSource::timed};
  // Best of 6 per kernel, the kernels taking turns: a burst of load from
  // elsewhere on a shared machine then slows one try of each rather than
  // every try of one (timed one kernel after the other, a noisy AMD Zen 3
  // VM picked the gather encoder, 25% slower there, in one process of two).
  // After two turns a kernel 25% behind the fastest is out of the running
  // (AMD Zen 3's gather and register-table encoders: 1.3-1.7x apart), and
  // one left alone has won: on AMD Zen 4 the decoders' timing then takes
  // avx512x and avx2x (24.5-24.8 us a turn) to six turns and drops avx512
  // and avx2 (31-34 us), which had run all six (`mithril --version -v`,
  // which times both directions, `perf stat -r 30-40`, session 45: 4.4 ms
  // with all four decoders to the end, 3.9-4.2 pruned, 3.6-4.4 at the
  // session's start with three decoders, 2.7-3.0 with MITHRIL_RANS_KERNEL
  // set).
  std::vector<double> best(avail.size(), 1e30);
  std::vector<bool> out(avail.size(), false);
  for (int rep = 0; rep < 6; ++rep) {
    if (rep >= 2) {
      const double fastest = *std::min_element(best.begin(), best.end());
      std::size_t left = 0;
      for (std::size_t i = 0; i < avail.size(); ++i) {
        if (best[i] > 1.25 * fastest) out[i] = true;
        left += !out[i];
      }
      if (left == 1) break;
    }
    for (std::size_t i = 0; i < avail.size(); ++i) {
      if (out[i]) continue;
      const Kernel k = avail[i];
      const double t0 = thread_seconds();
      if (dir == Direction::encode)
        (void)bench.encode(k);
      else
        bench.decode(k);
      best[i] = std::min(best[i], thread_seconds() - t0);
    }
  }
  Kernel pick = avail.back();
  double fastest = 1e30;
  for (std::size_t i = 0; i < avail.size(); ++i)
    // Ties go to the earlier kernel: a later one must be clearly faster (3%).
    if (best[i] < fastest * 0.97) fastest = best[i], pick = avail[i];
  util::remember_kernel(question, kernel_name(pick));
  return {pick, KernelSource::timed};
}

Choice choose(Direction dir) {
  if (const char* env = std::getenv("MITHRIL_RANS_KERNEL"); env && *env && std::string_view(env) != "auto") {
    // An unknown or unavailable name gets the best the CPU has; kernel_names()
    // (mithril --version -v) shows what runs.
    Kernel forced = Kernel::scalar;
    bool known = false;
    for (Kernel k : k_all_kernels)
      if (kernel_name(k) == env) forced = k, known = true;
    if (known && cpu_has(forced)) return {forced, KernelSource::forced};
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
    case Kernel::avx512x: return "avx512x";
  }
  return "?";
}

bool kernel_available(Kernel k) { return cpu_has(k); }

namespace {
const Choice& encode_choice() {
  static const Choice c = choose(Direction::encode);
  return c;
}
const Choice& decode_choice() {
  static const Choice c = choose(Direction::decode);
  return c;
}
}  // namespace

Kernel active_encode_kernel() { return encode_choice().kernel; }

Kernel active_decode_kernel() { return decode_choice().kernel; }

}  // namespace detail

KernelNames kernel_names() {
  return {detail::kernel_name(detail::active_encode_kernel()), detail::kernel_name(detail::active_decode_kernel()),
          detail::encode_choice().source, detail::decode_choice().source};
}

}  // namespace mithril::codec::rans
