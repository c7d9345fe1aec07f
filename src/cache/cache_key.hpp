// cache/cache_key.hpp — stable storage keys for compiled artifacts.
//
// A key is BLAKE3 over a canonical serialization (format v1, below) of:
// the graph hash, the input specs, the device class and the environment
// fingerprint. The serialization is part of the on-disk contract: golden
// tests (tests/unit/cache/test_cache_key.cpp) freeze both the bytes and the
// digests, so keys stay stable across releases. A change needs a new format
// version, never an edit of v1.
//
//   key      := "mithril-cache-key v1\n" graph inputs device env extra*
//   graph    := "graph " str "\n"
//   inputs   := "inputs " dec "\n" input*
//   input    := "input " str " " str " [" dims "]\n"     (dtype, layout)
//   dims     := "" | dim ("," dim)*        dim := dec | "-1" (dynamic)
//   device   := "device cpu\n" | "device cuda\n"
//             | "device cuda-cc " str "\n"               ("8.0")
//             | "device cuda-model " str "\n"            ("NVIDIA H100 80GB HBM3")
//   env      := "env torch " str "\n" "env triton " str "\n"
//               "env cuda " str "\n" "env driver " str "\n"
//   extra    := "extra " str " " str "\n"      (sorted by name, unique)
//   str      := dec ":" bytes                 (length-prefixed, any bytes)
//
// Thread-safety: value types; no shared state.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/blake3.hpp"

namespace mithril::cache {

struct InputSpec {
  std::vector<std::int64_t> shape;  // -1 marks a dynamic dimension
  std::string dtype;                // "float32", "bfloat16", ...
  std::string layout = "strided";   // "strided", "sparse_coo", ...
};

// How finely compiled code is tied to the device.
enum class DeviceGranularity {
  cpu,         // any CPU (the code carries its own ISA checks)
  cuda_any,    // any CUDA device (PTX that the driver JITs)
  cuda_cc,     // a compute capability, major.minor
  cuda_model,  // one exact GPU model
};

struct DeviceClass {
  DeviceGranularity granularity = DeviceGranularity::cpu;
  std::string value;  // "8.0" for cuda_cc, the model name for cuda_model
};

struct EnvFingerprint {
  std::string torch, triton, cuda, driver;
};

struct CacheKey {
  std::string graph_hash;
  std::vector<InputSpec> inputs;
  DeviceClass device;
  EnvFingerprint env;
  std::map<std::string, std::string> extra;

  // Throws Error(invalid_argument) on a dimension below -1, an empty dtype or
  // layout, or a device value that its granularity needs but lacks.
  std::string canonical() const;
  util::Digest digest() const;
  std::string hex() const;

  // From JSON:
  //   {"graph": "...", "inputs": [{"shape": [2, -1], "dtype": "float32",
  //    "layout": "strided"}], "device": "cpu" | "cuda" | "cuda-cc:8.0" |
  //    "cuda-model:NAME", "env": {"torch": "2.13.0", "triton": "", "cuda": "",
  //    "driver": ""}, "extra": {"k": "v"}}
  // Throws Error(invalid_argument) naming the bad field.
  static CacheKey from_json(std::string_view json);
};

}  // namespace mithril::cache
