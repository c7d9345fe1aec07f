// util/cpu_info.hpp: CPUID signatures decoded as the vendors document them
// (published leaf-1 EAX values of real server CPUs), their microarchitectures,
// and this machine's description against what Linux's /proc/cpuinfo says.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <string>

#include "util/cpu_info.hpp"

namespace mithril::util {
namespace {

struct Known {
  const char* vendor;
  std::uint32_t eax;
  unsigned family, model, stepping;
  const char* arch;
};

TEST(CpuInfo, SignaturesDecodeAsDocumented) {
  const Known known[] = {
      {"AuthenticAMD", 0x00800F12, 23, 1, 2, "Zen/Zen+"},   // EPYC 7601 (Naples)
      {"AuthenticAMD", 0x00830F10, 23, 49, 0, "Zen 2"},     // EPYC 7742 (Rome)
      {"AuthenticAMD", 0x00A00F11, 25, 1, 1, "Zen 3"},      // EPYC 7763 (Milan)
      {"AuthenticAMD", 0x00A10F11, 25, 17, 1, "Zen 4"},     // EPYC 9654 (Genoa)
      {"AuthenticAMD", 0x00A60F12, 25, 97, 2, "Zen 4"},     // Ryzen 9 7950X (Raphael)
      {"AuthenticAMD", 0x00AA0F01, 25, 160, 1, "Zen 4"},    // EPYC 9754 (Bergamo)
      {"AuthenticAMD", 0x00B00F21, 26, 2, 1, "Zen 5"},      // EPYC 9005 (Turin)
      {"GenuineIntel", 0x00050654, 6, 85, 4, "Skylake-SP"},  // Xeon Gold 6142
      {"GenuineIntel", 0x00050657, 6, 85, 7, "Cascade Lake"},
      {"GenuineIntel", 0x000606A6, 6, 106, 6, "Ice Lake-SP"},
      {"GenuineIntel", 0x000806F8, 6, 143, 8, "Sapphire Rapids"},
      {"GenuineIntel", 0x000C06F2, 6, 207, 2, "Emerald Rapids"},
      {"GenuineIntel", 0x00000F29, 15, 2, 9, ""},         // a Pentium 4: family 15, no table entry
      {"GenuineIntel", 0x00010543, 5, 4, 3, ""},          // family 5: the extended model is not prepended
      {"HygonGenuine", 0x00900F01, 24, 0, 1, ""},         // a vendor the table does not know
  };
  for (const Known& k : known) {
    SCOPED_TRACE(::testing::Message() << k.vendor << " 0x" << std::hex << k.eax);
    const CpuSignature s = decode_cpu_signature(k.vendor, k.eax);
    EXPECT_EQ(s.vendor, k.vendor);
    EXPECT_EQ(s.family, k.family);
    EXPECT_EQ(s.model, k.model);
    EXPECT_EQ(s.stepping, k.stepping);
    EXPECT_EQ(microarchitecture(s), k.arch);
  }
}

// AMX is Intel's server cores' from Sapphire Rapids on: a model number that
// names another core (a hypervisor's, as on a Xeon VM reported as Rocket
// Lake's model 167) gives way to what the features say.
TEST(CpuInfo, AmxOverridesAModelNumberWithoutIt) {
  CpuSignature s = decode_cpu_signature("GenuineIntel", 0x000A0671);  // family 6, model 167
  EXPECT_EQ(microarchitecture(s), "Rocket Lake");
  s.amx = true;
  EXPECT_EQ(microarchitecture(s), "Sapphire Rapids or later, by its AMX");
  CpuSignature spr = decode_cpu_signature("GenuineIntel", 0x000806F8);
  spr.amx = true;
  EXPECT_EQ(microarchitecture(spr), "Sapphire Rapids");
  CpuSignature amd = decode_cpu_signature("AuthenticAMD", 0x00A10F11);
  amd.amx = true;  // no AMD core has it; the table's name stands
  EXPECT_EQ(microarchitecture(amd), "Zen 4");
}

// The fields Linux decoded from the same CPUID leaf, in /proc/cpuinfo.
std::map<std::string, std::string> proc_cpuinfo_first_cpu() {
  std::map<std::string, std::string> fields;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line) && !line.empty();) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    key.erase(key.find_last_not_of(" \t") + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    fields.emplace(key, value);
  }
  return fields;
}

TEST(CpuInfo, ThisMachineAgreesWithProcCpuinfo) {
  const std::string d = cpu_description();
  ASSERT_FALSE(d.empty());
  const auto fields = proc_cpuinfo_first_cpu();
  if (fields.count("model name")) {
    EXPECT_EQ(d.rfind(fields.at("model name"), 0), 0u) << d;
  }
#if defined(__x86_64__)
  const auto s = cpu_signature();
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(fields.count("cpu family") && fields.count("model") && fields.count("vendor_id"));
  EXPECT_EQ(s->vendor, fields.at("vendor_id"));
  EXPECT_EQ(std::to_string(s->family), fields.at("cpu family"));
  EXPECT_EQ(std::to_string(s->model), fields.at("model"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(d, m, std::regex(R"( \((.*)family (\d+), model (\d+); (AVX-512|AVX2|SSE2)\)$)"))) << d;
  EXPECT_EQ(m[2].str(), fields.at("cpu family"));
  EXPECT_EQ(m[3].str(), fields.at("model"));
  const std::string arch(microarchitecture(*s));
  EXPECT_EQ(m[1].str(), arch.empty() ? "" : arch + ": ");
  // The ISA named is the widest in the flags Linux reports.
  const std::string flags = " " + (fields.count("flags") ? fields.at("flags") : std::string()) + " ";
  const bool avx512 = flags.find(" avx512f ") != std::string::npos && flags.find(" avx512bw ") != std::string::npos;
  const bool avx2 = flags.find(" avx2 ") != std::string::npos;
  EXPECT_EQ(m[4].str(), avx512 ? "AVX-512" : avx2 ? "AVX2" : "SSE2");
  // Linux lists amx_tile only where CPUID has it (and may leave it out where
  // the kernel cannot enable the tiles' state).
  if (flags.find(" amx_tile ") != std::string::npos) {
    EXPECT_TRUE(s->amx);
  }
#else
  EXPECT_FALSE(cpu_signature().has_value());
#endif
}

}  // namespace
}  // namespace mithril::util
