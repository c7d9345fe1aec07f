// bench_remote_hit — in-process latency of a compile-cache remote hit.
//
//   bench_remote_hit URL ENTRIES ENTRY_BYTES WORKDIR
//
// Store A (WORKDIR/a) puts ENTRIES CAS entries of ENTRY_BYTES random bytes and
// waits for their upload to URL. Store B (WORKDIR/b, empty) then gets each
// once — a local miss answered by the remote: manifest + blob fetched,
// BLAKE3-verified, stored locally — and each again (a local hit). Prints the
// p50/p99 of both in microseconds as JSON. Run by bench/bench_remote.py,
// which starts the servers.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "mithril/cache.hpp"

namespace {

double pct(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q / 100.0 * static_cast<double>(v.size() - 1) + 0.5)];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mithril::cache;
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s URL ENTRIES ENTRY_BYTES WORKDIR\n", argv[0]);
    return 2;
  }
  const std::string url = argv[1];
  const int n = std::stoi(argv[2]);
  const std::size_t bytes = std::stoul(argv[3]);
  const std::filesystem::path work = argv[4];
  try {
    CacheConfig ca;
    ca.root = work / "a";
    ca.remotes = {url};
    CacheConfig cb = ca;
    cb.root = work / "b";
    std::mt19937_64 rng(42);
    {
      Store a(ca);
      for (int i = 0; i < n; ++i) {
        std::vector<std::byte> data(bytes);
        for (auto& b : data) b = static_cast<std::byte>(rng());
        a.put("blob", "k" + std::to_string(i), {{"entry.bin", std::move(data)}});
      }
      a.flush_remote();
      if (a.remote_session().uploads != n) {
        std::fprintf(stderr, "only %lld of %d entries uploaded\n", static_cast<long long>(a.remote_session().uploads), n);
        return 1;
      }
    }
    Store b(cb);
    std::vector<double> remote, local;
    for (int pass = 0; pass < 2; ++pass) {
      for (int i = 0; i < n; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto got = b.get("blob", "k" + std::to_string(i));
        const auto t1 = std::chrono::steady_clock::now();
        if (!got || got->front().second.size() != bytes) {
          std::fprintf(stderr, "entry k%d: miss\n", i);
          return 1;
        }
        (pass == 0 ? remote : local).push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      }
    }
    const auto s = b.remote_session();
    std::printf(
        "{\"entries\": %d, \"entry_bytes\": %zu, \"remote_hit_us\": {\"p50\": %.0f, \"p99\": %.0f}, "
        "\"local_hit_us\": {\"p50\": %.0f, \"p99\": %.0f}, \"remote_hits\": %lld, \"bytes_down\": %lld}\n",
        n, bytes, pct(remote, 50), pct(remote, 99), pct(local, 50), pct(local, 99), static_cast<long long>(s.hits),
        static_cast<long long>(s.bytes_down));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_remote_hit: %s\n", e.what());
    return 1;
  }
  return 0;
}
