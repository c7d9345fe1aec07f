// bench_cache — compile-cache micro-benchmarks (Google Benchmark).
//
//   ./build/bench_cache --benchmark_min_time=0.2
//
// BM_Lookup*: a present CAS entry looked up with 100k entries indexed
//   (counters p50_us / p99_us: per-lookup latency percentiles).
// BM_Put*: Store::put of 1 MiB entries (bytes_per_second).
// BM_EvictIndex: LRU selection + deletion of 100k index rows.
// BM_EvictEntries: whole-entry eviction of 5k Triton-like directories.
// BM_SyncUnchanged: sync of a store of 10k framework entries, nothing new.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "cache/index.hpp"
#include "mithril/cache.hpp"
#include "mithril/version.hpp"

namespace fs = std::filesystem;
using namespace mithril;
using namespace mithril::cache;

namespace {

fs::path scratch(const std::string& name) {
  auto p = fs::temp_directory_path() / ("mithril-bench-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

CacheConfig cfg(const fs::path& root) {
  CacheConfig c;
  c.root = root;
  c.max_size = std::uint64_t{1} << 40;
  return c;
}

EntryRow fake_row(std::size_t i) {
  EntryRow r;
  r.id = "triton/FAKE" + std::to_string(i);
  r.kind = EntryKind::triton_kernel;
  r.manifest = std::string(64, 'a');
  r.size = 1000;
  r.files = 3;
  r.probe = r.id + "/__grp__k.json";
  r.created = r.last_use = static_cast<std::int64_t>(i);
  return r;
}

void fill_index(const fs::path& root, std::size_t n) {
  Index idx(root / "index.sqlite");
  Index::Transaction t(idx);
  for (std::size_t i = 0; i < n; ++i) idx.upsert(fake_row(i));
  t.commit();
}

void percentiles(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_us"] = us[us.size() / 2];
  state.counters["p99_us"] = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  state.counters["max_us"] = us.back();
}

void BM_LookupPresent100k(benchmark::State& state) {
  const auto root = scratch("lookup");
  { Store s(cfg(root)); }
  fill_index(root, 100000);
  Store store(cfg(root));
  std::vector<std::byte> data(static_cast<std::size_t>(state.range(0)), std::byte{1});
  for (int i = 0; i < 100; ++i) store.put("blob", "k" + std::to_string(i), {{"a", data}});
  std::vector<double> us;
  std::size_t i = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = store.get("blob", "k" + std::to_string(i++ % 100));
    benchmark::DoNotOptimize(r);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (!r) state.SkipWithError("miss");
  }
  percentiles(state, us);
  fs::remove_all(root);
}
BENCHMARK(BM_LookupPresent100k)->Arg(1024)->Arg(256 * 1024)->Unit(benchmark::kMicrosecond);

void BM_LookupIndexOnly100k(benchmark::State& state) {
  const auto root = scratch("lookup-index");
  fill_index(root, 100000);
  Index idx(root / "index.sqlite");
  std::mt19937 rng(1);
  std::vector<double> us;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = idx.touch("triton/FAKE" + std::to_string(rng() % 100000), 1);
    benchmark::DoNotOptimize(r);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  percentiles(state, us);
  fs::remove_all(root);
}
BENCHMARK(BM_LookupIndexOnly100k)->Unit(benchmark::kMicrosecond);

void BM_Put(benchmark::State& state) {
  const auto root = scratch("put");
  Store store(cfg(root));
  std::vector<std::byte> data(1 << 20);
  std::mt19937_64 rng(7);
  const bool random = state.range(0) == 1;
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<std::byte>(random ? rng() : (i % 251 < 200 ? 0 : i % 7));
  std::size_t n = 0;
  for (auto _ : state) {
    data[0] = static_cast<std::byte>(n);  // a new blob each time
    data[1] = static_cast<std::byte>(n >> 8);
    store.put("blob", "p" + std::to_string(n++), {{"a", data}});
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(n * data.size()));
  state.SetLabel(random ? "incompressible" : "compressible");
  fs::remove_all(root);
}
BENCHMARK(BM_Put)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_EvictIndex100k(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    const auto root = scratch("evict-index");
    fill_index(root, 100000);
    Index idx(root / "index.sqlite");
    state.ResumeTiming();
    Index::Transaction t(idx);
    auto v = idx.take_victims(0, 0, 0, INT64_MAX);
    t.commit();
    benchmark::DoNotOptimize(v);
    state.PauseTiming();
    fs::remove_all(root);
    state.ResumeTiming();
  }
}
BENCHMARK(BM_EvictIndex100k)->Unit(benchmark::kMillisecond)->Iterations(2);

void make_triton_entries(const fs::path& root, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const auto d = root / "triton" / ("K" + std::to_string(i));
    fs::create_directories(d);
    std::ofstream(d / "k.cubin") << std::string(1000, 'c');
    std::ofstream(d / "__grp__k.json") << "{\"child_paths\": {\"k.cubin\": \"" << (d / "k.cubin").string() << "\"}}";
  }
}

void BM_EvictEntries5k(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    const auto root = fs::canonical(scratch("evict-files"));
    make_triton_entries(root, 5000);
    Store store(cfg(root));
    store.sync();
    state.ResumeTiming();
    GcOptions o;
    o.max_size = 0;
    auto r = store.gc(o);
    if (r.evicted != 5000) state.SkipWithError("not all evicted");
    state.PauseTiming();
    fs::remove_all(root);
    state.ResumeTiming();
  }
}
BENCHMARK(BM_EvictEntries5k)->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_SyncUnchanged10k(benchmark::State& state) {
  const auto root = fs::canonical(scratch("sync"));
  make_triton_entries(root, 10000);
  Store store(cfg(root));
  store.sync();
  for (auto _ : state) {
    auto r = store.sync();
    benchmark::DoNotOptimize(r);
  }
  fs::remove_all(root);
}
BENCHMARK(BM_SyncUnchanged10k)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // The store hashes with BLAKE3: the machine and its kernel beside the numbers.
  benchmark::AddCustomContext("cpu_model", mithril::cpu_model());
  benchmark::AddCustomContext("blake3_kernel", mithril::kernels().blake3);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
