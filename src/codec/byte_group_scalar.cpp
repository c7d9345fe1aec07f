// codec/byte_group_scalar.cpp — portable kernels: the fallback off x86-64.
#include "codec/byte_group_kernels.hpp"

namespace mithril::codec::detail {
namespace {

template <typename T, bool Rot>
void group(const std::byte* in, std::byte* out, std::size_t n, std::size_t stride) {
  group_range<T, Rot>(in, out, stride, 0, n);
}
template <typename T, bool Rot>
void ungroup(const std::byte* const* planes, std::byte* out, std::size_t m) {
  ungroup_range<T, Rot>(planes, out, 0, m);
}
template <typename T>
void sub(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  sub_range<T>(a, b, out, 0, m);
}
template <typename T>
void add(const std::byte* a, const std::byte* b, std::byte* out, std::size_t m) {
  add_range<T>(a, b, out, 0, m);
}
void xor_bytes(const std::byte* a, const std::byte* b, std::byte* out, std::size_t n) { xor_range(a, b, out, 0, n); }

}  // namespace

// The sampled counts of histogram_estimate() one byte at a time, with the
// results of the AVX2 kernels (byte_group_avx2.cpp), which every container
// depends on: the same runs counted, the same bytes checked.
void count_window_portable(const std::byte* p, std::size_t n, std::uint8_t lo, WindowSample& w) {
  std::uint32_t* hist = w.hist;
  std::uint64_t skipped = 0;
  std::uint32_t present = 0;
  std::size_t i = 0;
  for (; n - i >= k_window_run; i += k_window_run) {
    for (std::size_t e = i; e < i + k_window_counted; ++e) ++hist[static_cast<std::uint8_t>(p[e])];
    for (std::size_t e = i + k_window_counted; e < i + k_window_run; ++e) {
      const auto b = static_cast<std::uint8_t>(p[e]);
      const auto j = static_cast<std::uint8_t>(b - lo);
      if (j < 16) {
        present |= 1u << j;
        ++skipped;
      } else {
        ++hist[b];
      }
    }
  }
  for (; i < n; ++i) ++hist[static_cast<std::uint8_t>(p[i])];
  w.present = present;
  w.uncounted = skipped;
}

void count_spread_portable(const std::byte* p, std::size_t n, SpreadSample& w) {
  std::uint32_t* sample = w.sample;
  std::uint64_t skipped = 0;
  std::size_t i = 0;
  for (; n - i >= k_window_run; i += k_window_run) {
    for (std::size_t e = i; e < i + k_window_counted; ++e) ++sample[static_cast<std::uint8_t>(p[e])];
    for (std::size_t e = i + k_window_counted; e < i + k_window_run; ++e) {
      const auto b = static_cast<std::uint8_t>(p[e]);
      if (sample[b] != 0)
        ++skipped;
      else
        ++w.extra[b];
    }
  }
  for (; i < n; ++i) ++sample[static_cast<std::uint8_t>(p[i])];
  w.uncounted = skipped;
}

const ByteGroupKernels k_scalar_kernels = {
    Isa::scalar,
    {{group<std::uint16_t, false>, group<std::uint16_t, true>},
     {group<std::uint32_t, false>, group<std::uint32_t, true>},
     {group<std::uint64_t, false>, group<std::uint64_t, true>}},
    {{ungroup<std::uint16_t, false>, ungroup<std::uint16_t, true>},
     {ungroup<std::uint32_t, false>, ungroup<std::uint32_t, true>},
     {ungroup<std::uint64_t, false>, ungroup<std::uint64_t, true>}},
    xor_bytes,
    {sub<std::uint8_t>, sub<std::uint16_t>, sub<std::uint32_t>, sub<std::uint64_t>},
    {add<std::uint8_t>, add<std::uint16_t>, add<std::uint32_t>, add<std::uint64_t>},
    {nullptr, nullptr, nullptr, nullptr},
    count_window_portable,
    count_spread_portable,
};

}  // namespace mithril::codec::detail
