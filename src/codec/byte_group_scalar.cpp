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
};

}  // namespace mithril::codec::detail
