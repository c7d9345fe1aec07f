#include "cache/cache_key.hpp"

#include <gtest/gtest.h>

#include <set>

#include "mithril/error.hpp"

using namespace mithril;
using namespace mithril::cache;

namespace {

CacheKey sample() {
  CacheKey k;
  k.graph_hash = "fx0123abcd";
  k.inputs = {{{8, -1, 64}, "float32", "strided"}, {{}, "int64", "strided"}};
  k.device = {DeviceGranularity::cuda_cc, "8.0"};
  k.env = {"2.13.0", "3.5.0", "12.8", "570.86"};
  k.extra = {{"mode", "max-autotune"}};
  return k;
}

}  // namespace

// The canonical form, spelled out by hand from the grammar in cache_key.hpp.
TEST(CacheKey, CanonicalSerializationV1) {
  const std::string expected =
      "mithril-cache-key v1\n"
      "graph 10:fx0123abcd\n"
      "inputs 2\n"
      "input 7:float32 7:strided [8,-1,64]\n"
      "input 5:int64 7:strided []\n"
      "device cuda-cc 3:8.0\n"
      "env torch 6:2.13.0\n"
      "env triton 5:3.5.0\n"
      "env cuda 4:12.8\n"
      "env driver 6:570.86\n"
      "extra 4:mode 12:max-autotune\n";
  EXPECT_EQ(sample().canonical(), expected);
  EXPECT_EQ(sample().digest(), util::blake3(util::as_bytes(expected)));
}

// Golden storage keys: frozen. If one of these changes, every store in the
// field misses — bump the format version instead of editing these. The
// digests were computed with the reference BLAKE3 (the `blake3` Python
// package, bindings of the official Rust crate), not with our code.
TEST(CacheKey, GoldenKeys) {
  EXPECT_EQ(sample().hex(), "5b84fbf250474b39e72b6bee4d2356f04f0e90460b513177bbf7823d345eb569");
  CacheKey cpu;
  cpu.graph_hash = "g";
  cpu.env.torch = "2.13.0";
  EXPECT_EQ(cpu.canonical(),
            "mithril-cache-key v1\ngraph 1:g\ninputs 0\ndevice cpu\nenv torch 6:2.13.0\nenv triton 0:\nenv cuda 0:\n"
            "env driver 0:\n");
  EXPECT_EQ(cpu.hex(), "b00adda5fd4dc42314007fda9f5d4e2425ffbda20570c52a4ecb5dedde6ead5e");
}

TEST(CacheKey, EveryFieldMatters) {
  const auto base = sample().hex();
  std::vector<CacheKey> variants(9, sample());
  variants[0].graph_hash = "fx0123abce";
  variants[1].inputs[0].shape[1] = 16;
  variants[2].inputs[0].dtype = "bfloat16";
  variants[3].inputs[0].layout = "sparse_coo";
  variants[4].device = {DeviceGranularity::cuda_cc, "9.0"};
  variants[5].device = {DeviceGranularity::cuda_model, "8.0"};
  variants[6].env.driver = "570.87";
  variants[7].extra["mode"] = "default";
  variants[8].inputs.pop_back();
  std::set<std::string> seen{base};
  for (const auto& v : variants) EXPECT_TRUE(seen.insert(v.hex()).second) << v.canonical();
}

TEST(CacheKey, LengthPrefixesPreventAmbiguity) {
  CacheKey a, b;
  a.graph_hash = "x\nenv torch 1:y";
  b.graph_hash = "x";
  b.env.torch = "y";
  EXPECT_NE(a.hex(), b.hex());
  CacheKey c, d;
  c.extra = {{"a b", "c"}};
  d.extra = {{"a", "b c"}};
  EXPECT_NE(c.hex(), d.hex());
}

TEST(CacheKey, RejectsInvalidSpecs) {
  auto k = sample();
  k.inputs[0].shape[0] = -2;
  EXPECT_THROW(k.canonical(), Error);
  k = sample();
  k.inputs[0].dtype.clear();
  EXPECT_THROW(k.canonical(), Error);
  k = sample();
  k.device = {DeviceGranularity::cuda_model, ""};
  EXPECT_THROW(k.canonical(), Error);
}

TEST(CacheKey, FromJsonMatchesStruct) {
  const auto k = CacheKey::from_json(R"({"graph": "fx0123abcd",
      "inputs": [{"shape": [8, -1, 64], "dtype": "float32"}, {"shape": [], "dtype": "int64", "layout": "strided"}],
      "device": "cuda-cc:8.0",
      "env": {"torch": "2.13.0", "triton": "3.5.0", "cuda": "12.8", "driver": "570.86"},
      "extra": {"mode": "max-autotune"}})");
  EXPECT_EQ(k.canonical(), sample().canonical());
  EXPECT_THROW(CacheKey::from_json(R"({"graph": "g", "device": "tpu"})"), Error);
  EXPECT_THROW(CacheKey::from_json(R"({"inputs": []})"), Error);
  EXPECT_THROW(CacheKey::from_json("[1]"), Error);
}
