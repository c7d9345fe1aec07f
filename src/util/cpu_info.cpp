#include "util/cpu_info.hpp"

#include <cstring>
#include <fstream>
#include <initializer_list>

#include <fmt/format.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#define MITHRIL_HAVE_CPUID 1
#endif

namespace mithril::util {
namespace {

struct Range {
  unsigned first, last;  // models, inclusive
  std::string_view name;
};

std::string_view find(std::initializer_list<Range> table, unsigned model) noexcept {
  for (const Range& r : table)
    if (model >= r.first && model <= r.last) return r.name;
  return {};
}

std::string_view amd(unsigned family, unsigned model) noexcept {
  switch (family) {
    case 0x17:
      return find({{0x00, 0x2f, "Zen/Zen+"}, {0x30, 0xaf, "Zen 2"}}, model);
    case 0x19:
      return find({{0x00, 0x0f, "Zen 3"},
                   {0x10, 0x1f, "Zen 4"},
                   {0x20, 0x2f, "Zen 3"},
                   {0x40, 0x5f, "Zen 3"},
                   {0x60, 0x7f, "Zen 4"},
                   {0xa0, 0xaf, "Zen 4"}},
                  model);
    case 0x1a:
      return find({{0x00, 0x4f, "Zen 5"}, {0x60, 0x7f, "Zen 5"}}, model);
    default:
      return {};
  }
}

std::string_view intel(unsigned family, unsigned model, unsigned stepping) noexcept {
  if (family != 6) return {};
  if (model == 0x55) return stepping <= 4 ? "Skylake-SP" : stepping <= 7 ? "Cascade Lake" : "Cooper Lake";
  return find({{0x3c, 0x3c, "Haswell"},         {0x3f, 0x3f, "Haswell"},       {0x45, 0x46, "Haswell"},
               {0x3d, 0x3d, "Broadwell"},       {0x47, 0x47, "Broadwell"},     {0x4f, 0x4f, "Broadwell"},
               {0x56, 0x56, "Broadwell"},       {0x4e, 0x4e, "Skylake"},       {0x5e, 0x5e, "Skylake"},
               {0x8e, 0x8e, "Kaby/Coffee Lake"}, {0x9e, 0x9e, "Kaby/Coffee Lake"}, {0xa5, 0xa6, "Comet Lake"},
               {0x66, 0x66, "Cannon Lake"},     {0x7d, 0x7e, "Ice Lake"},      {0x6a, 0x6a, "Ice Lake-SP"},
               {0x6c, 0x6c, "Ice Lake-SP"},     {0x8c, 0x8d, "Tiger Lake"},    {0xa7, 0xa7, "Rocket Lake"},
               {0x97, 0x97, "Alder Lake"},      {0x9a, 0x9a, "Alder Lake"},    {0xb7, 0xb7, "Raptor Lake"},
               {0xba, 0xba, "Raptor Lake"},     {0xbf, 0xbf, "Raptor Lake"},   {0xaa, 0xaa, "Meteor Lake"},
               {0xac, 0xac, "Meteor Lake"},     {0xc5, 0xc6, "Arrow Lake"},    {0xbd, 0xbd, "Lunar Lake"},
               {0x8f, 0x8f, "Sapphire Rapids"}, {0xcf, 0xcf, "Emerald Rapids"}, {0xad, 0xae, "Granite Rapids"},
               {0xaf, 0xaf, "Sierra Forest"},   {0xdd, 0xdd, "Clearwater Forest"}},
              model);
}

std::string proc_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string m = line.substr(colon + 1);
      m.erase(0, m.find_first_not_of(" \t"));
      if (!m.empty()) return m;
    }
  return {};
}

#ifdef MITHRIL_HAVE_CPUID
// CPUID leaves 0x80000002-4: the brand string, padded with spaces and NULs.
std::string brand_string() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000004u) return {};
  char text[49] = {};
  for (unsigned leaf = 0; leaf < 3; ++leaf) {
    unsigned r[4];
    __get_cpuid(0x80000002u + leaf, &r[0], &r[1], &r[2], &r[3]);
    std::memcpy(text + 16 * leaf, r, 16);
  }
  std::string s(text);
  s.erase(0, s.find_first_not_of(' '));
  s.erase(s.find_last_not_of(' ') + 1);
  return s;
}
#endif

}  // namespace

CpuSignature decode_cpu_signature(std::string_view vendor, std::uint32_t eax) noexcept {
  CpuSignature s;
  s.vendor = std::string(vendor);
  const unsigned base_family = (eax >> 8) & 0xf;
  const unsigned base_model = (eax >> 4) & 0xf;
  s.stepping = eax & 0xf;
  s.family = base_family == 0xf ? base_family + ((eax >> 20) & 0xff) : base_family;
  s.model = base_family == 6 || base_family == 0xf ? (((eax >> 16) & 0xf) << 4) | base_model : base_model;
  return s;
}

std::optional<CpuSignature> cpu_signature() {
#ifdef MITHRIL_HAVE_CPUID
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return std::nullopt;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  const unsigned max_leaf = a;
  if (max_leaf < 1 || !__get_cpuid(1, &a, &b, &c, &d)) return std::nullopt;
  CpuSignature s = decode_cpu_signature(vendor, a);
  if (max_leaf >= 7 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) s.amx = (d >> 24) & 1;
  return s;
#else
  return std::nullopt;
#endif
}

std::string_view microarchitecture(const CpuSignature& s) noexcept {
  if (s.vendor == "AuthenticAMD") return amd(s.family, s.model);
  if (s.vendor != "GenuineIntel") return {};
  const std::string_view arch = intel(s.family, s.model, s.stepping);
  if (s.amx && arch != "Sapphire Rapids" && arch != "Emerald Rapids" && arch != "Granite Rapids")
    return "Sapphire Rapids or later, by its AMX";
  return arch;
}

std::string cpu_description() {
  std::string name = proc_model_name();
#ifdef MITHRIL_HAVE_CPUID
  if (name.empty()) name = brand_string();
#endif
  if (name.empty()) name = "unknown CPU";
  const auto sig = cpu_signature();
  if (!sig) return name;
  std::string isa = "SSE2";
#ifdef MITHRIL_HAVE_CPUID
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    isa = "AVX-512";
  else if (__builtin_cpu_supports("avx2"))
    isa = "AVX2";
#endif
  const std::string_view arch = microarchitecture(*sig);
  return fmt::format("{} ({}{}family {}, model {}; {})", name, arch, arch.empty() ? "" : ": ", sig->family,
                     sig->model, isa);
}

std::string cpu_identity() {
  const auto sig = cpu_signature();
  if (!sig) return "unknown";
  std::string brand;
#ifdef MITHRIL_HAVE_CPUID
  brand = brand_string();
#endif
  return fmt::format("{} {} {} {} {}", sig->vendor, sig->family, sig->model, sig->stepping, brand);
}

}  // namespace mithril::util
