// bench/bench_pipeline.cpp — the whole pipeline in memory (mithril/memory.hpp),
// 1 and 2+ threads, on bf16-like data or a file given in MITHRIL_BENCH_FILE:
// compress and decompress MiB/s of original bytes, no file system involved.
// Prints the kernels in use (BLAKE3, byte grouping, rANS, XXH3, pairs, split) in the
// benchmark context; `bench_pipeline --kernels` prints only those, `--host-clock`
// only the host's clock (bench/host_clock.hpp), which the context also holds.
//
//   build/bench_pipeline --benchmark_min_time=1
//   MITHRIL_BENCH_FILE=bench/data/step_000030/model_bf16.safetensors build/bench_pipeline
//   MITHRIL_BENCH_CHUNK=1048576 build/bench_pipeline   # another chunk size (default 4 MiB)
//   MITHRIL_BENCH_THREADS=1,2,4,8,16 build/bench_pipeline  # other thread counts (default 1,2)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "host_clock.hpp"
#include "mithril/memory.hpp"
#include "mithril/version.hpp"

namespace {

// A file's bytes (planned like a file), or 64 MiB of bf16 from a normal
// distribution (what trained weights look like to the coder).
const std::vector<std::byte>& input(std::string& dtype) {
  static std::vector<std::byte> data;
  static std::string kind;
  if (data.empty()) {
    if (const char* path = std::getenv("MITHRIL_BENCH_FILE")) {
      std::ifstream f(path, std::ios::binary);
      std::vector<char> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      data.resize(v.size());
      std::memcpy(data.data(), v.data(), v.size());
    } else {
      std::mt19937 rng(1);
      std::normal_distribution<float> dist(0.0f, 0.02f);
      data.resize(64u << 20);
      for (std::size_t i = 0; i < data.size(); i += 2) {
        const float x = dist(rng);
        std::uint32_t u;
        std::memcpy(&u, &x, 4);
        const auto b = static_cast<std::uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        std::memcpy(data.data() + i, &b, 2);
      }
      kind = "BF16";
    }
  }
  dtype = kind;
  return data;
}

mithril::CompressOptions options(benchmark::State& st) {
  mithril::CompressOptions o;
  o.threads = static_cast<unsigned>(st.range(0));
  o.sync = false;
  if (const char* c = std::getenv("MITHRIL_BENCH_CHUNK")) o.chunk_size = std::stoull(c);
  // MITHRIL_BENCH_LEVEL=1: the fast levels' Huffman exponent planes (codec/huff.hpp).
  if (const char* l = std::getenv("MITHRIL_BENCH_LEVEL")) o.level = std::atoi(l);
  return o;
}

// Into one reused buffer (allocated at the first call's bound), as the
// decompress benchmark: the pipeline's own work and its scaling with
// threads, without the first-touch page faults of a fresh output.
void BM_CompressMemory(benchmark::State& st) {
  std::string dtype;
  const auto& data = input(dtype);
  std::vector<std::byte> out;
  std::uint64_t size = 0;
  const mithril::MemoryAllocator reuse = [&](std::uint64_t bound) {
    if (out.size() < bound) out.resize(bound);
    return std::span<std::byte>(out.data(), bound);
  };
  for (auto _ : st) {
    size = mithril::compress_to_memory(data, dtype, options(st), reuse);
    benchmark::DoNotOptimize(out.data());
  }
  if (mithril::decompress_buffer(std::span<const std::byte>(out.data(), size)) != data)
    st.SkipWithError("round trip is not exact");
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * data.size()));
  st.counters["ratio"] = static_cast<double>(data.size()) / static_cast<double>(size);
}

// Args: threads, whole-file BLAKE3 check (1) or chunk checksums only (0).
// Into one reused buffer: no first-touch page faults, unlike a fresh
// Python bytes object each call.
void BM_DecompressMemory(benchmark::State& st) {
  std::string dtype;
  const auto& data = input(dtype);
  const auto mcp = mithril::compress_buffer(data, dtype, options(st));
  std::vector<std::byte> out(data.size());
  mithril::DecompressOptions d;
  d.threads = static_cast<unsigned>(st.range(0));
  d.check_digest = st.range(1) != 0;
  for (auto _ : st) {
    mithril::decompress_into(mcp, out, d);
    benchmark::DoNotOptimize(out.data());
  }
  if (out != data) st.SkipWithError("round trip is not exact");
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * data.size()));
}

// Into memory allocated for each call and never touched before (what
// Python's mithril.decompress() returns: a new bytes object), so the time
// includes mapping and zeroing its pages (util/fresh_memory.hpp).
// Args: threads; the whole-file BLAKE3 is not checked.
void BM_DecompressNew(benchmark::State& st) {
  std::string dtype;
  const auto& data = input(dtype);
  const auto mcp = mithril::compress_buffer(data, dtype, options(st));
  mithril::DecompressOptions d;
  d.threads = static_cast<unsigned>(st.range(0));
  d.check_digest = false;
  bool exact = true, checked = false;
  for (auto _ : st) {
    std::unique_ptr<std::byte[]> out;  // default-initialised: no page touched
    const auto size = mithril::decompress_to_memory(mcp, d, [&](std::uint64_t n) {
      out.reset(new std::byte[n]);
      return std::span<std::byte>(out.get(), n);
    });
    benchmark::DoNotOptimize(out.get());
    st.PauseTiming();
    if (!checked) {  // the first call's output (comparing every one would evict the caches)
      exact = size == data.size() && std::memcmp(out.get(), data.data(), data.size()) == 0;
      checked = true;
    }
    out.reset();  // freed outside the timing: unmapping is the caller's cost
    st.ResumeTiming();
  }
  if (!exact) st.SkipWithError("round trip is not exact");
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * data.size()));
}

// Thread counts: MITHRIL_BENCH_THREADS ("1,2,4,8,16"; 0 = all cores), else
// 1 and 2. Empty when the list is not one of thread counts.
std::vector<std::int64_t> thread_counts() {
  const char* s = std::getenv("MITHRIL_BENCH_THREADS");
  if (!s) return {1, 2};
  std::vector<std::int64_t> t;
  const std::string list(s);
  for (std::size_t at = 0; at <= list.size();) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, comma - at);
    if (item.empty() || item.size() > 4 || item.find_first_not_of("0123456789") != std::string::npos) return {};
    t.push_back(std::stoll(item));
    at = comma + 1;
  }
  return t;
}

bool register_benchmarks() {
  const auto threads = thread_counts();
  if (threads.empty()) {
    std::cerr << "bench_pipeline: MITHRIL_BENCH_THREADS=" << std::getenv("MITHRIL_BENCH_THREADS")
              << " is not a list of thread counts (such as 1,2,4)\n";
    return false;
  }
  auto* c = benchmark::RegisterBenchmark("BM_CompressMemory", BM_CompressMemory);
  for (const auto n : threads) c->Arg(n);
  c->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("BM_DecompressMemory", BM_DecompressMemory)
      ->ArgsProduct({threads, {1, 0}})
      ->ArgNames({"threads", "digest"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  auto* n = benchmark::RegisterBenchmark("BM_DecompressNew", BM_DecompressNew);
  for (const auto t : threads) n->Arg(t);
  n->ArgName("threads")->UseRealTime()->Unit(benchmark::kMillisecond);
  return true;
}

std::string kernels() {
  const auto k = mithril::kernels();
  const auto cap = mithril::isa_cap();
  return "blake3=" + k.blake3 + " byte_group=" + k.byte_grouping + " rans_encode=" + k.rans_encode +
         " rans_decode=" + k.rans_decode + " xxh3=" + k.xxh3 + " pairs=" + k.pairs + " split=" + k.split +
         " streaming_copy=" + k.streaming_copy +
         (cap.level.empty() ? "" : " isa_cap=" + cap.level);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--kernels") {
      std::cout << kernels() << "\n";
      return 0;
    } else if (std::string(argv[i]) == "--host-clock") {
      std::cout << mithril::bench::describe(mithril::bench::measure_host_clock()) << "\n";
      return 0;
    }
  benchmark::AddCustomContext("cpu_model", mithril::cpu_model());
  benchmark::AddCustomContext("host_clock", mithril::bench::describe(mithril::bench::measure_host_clock()));
  benchmark::AddCustomContext("kernels", kernels());
  if (!register_benchmarks()) return 2;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
