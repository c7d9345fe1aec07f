// cli/cmd_bench.cpp — `mithril bench FILE...`: what compression and
// decompression cost on this machine, as `zstd -b` answers for zstd.
//
// Each file is read into memory once; every (level, threads) row then
// compresses it into one reused buffer and decompresses that container into
// another (mithril/memory.hpp: the same chunking, coding and checks as
// `mithril compress` / `decompress`, without the file system), one untimed
// warm-up round each way and then timed rounds until --seconds have passed
// (at least one). The median round is reported, in MiB/s of original bytes.
// Every row's last restore is compared with the original byte for byte: a
// difference is an internal error (exit 70), never a printed number.
// --zstd LEVEL adds, per file and thread count, libzstd's own in-memory API
// at that level on the same bytes in the same run (ZSTD_compress2 with
// nbWorkers = threads when threads > 1; ZSTD_decompressDCtx; no checksum,
// the library's default) — the peer at its fastest honest use.
//
// The header names the CPU model, the cores and the kernels in use
// (mithril --version -v), since the numbers mean little without them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <unistd.h>
#include <zstd.h>

#include "cli/commands.hpp"
#include "mithril/cache.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/error.hpp"
#include "mithril/memory.hpp"
#include "mithril/version.hpp"

namespace mithril::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::vector<std::string> files;
  std::string levels = "3";
  std::string threads = "0";
  double seconds = 1.0;
  int zstd_level = 0;  // 0: no zstd rows
  bool no_digest = false;
  bool json = false;
  std::string chunk_size;
};

unsigned all_cores() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? hw : 1;
}

// "3", "1-5", "1,3,12", "1-3,9": the values in order of first mention, each
// within [lo, hi]. `what` names the option in errors.
std::vector<int> parse_list(const std::string& text, int lo, int hi, const std::string& what) {
  std::vector<int> out;
  auto bad = [&](const std::string& why) {
    return Error(Errc::invalid_argument, fmt::format("{} '{}': {}", what, text, why));
  };
  auto number = [&](const std::string& s) {
    if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos)
      throw bad(fmt::format("'{}' is not a number", s));
    const int v = std::stoi(s);
    if (v < lo || v > hi) throw bad(fmt::format("{} is outside {}..{}", v, lo, hi));
    return v;
  };
  std::size_t at = 0;
  while (true) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, comma - at);
    const std::size_t dash = item.find('-');
    int a = 0, b = 0;
    if (dash == std::string::npos) {
      a = b = number(item);
    } else {
      a = number(item.substr(0, dash));
      b = number(item.substr(dash + 1));
      if (b < a) throw bad(fmt::format("the range {}-{} runs backwards", a, b));
    }
    for (int v = a; v <= b; ++v)
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    if (comma == text.size()) break;
    at = comma + 1;
  }
  return out;
}

// Every input is checked before the first is measured: a typo in the last
// of several files fails at once, not after minutes of work.
void check_input(const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(Errc::not_found, fmt::format("{}: no such file", path));
  if (fs::is_directory(st))
    throw Error(Errc::invalid_argument, fmt::format("{}: is a directory (bench takes files: give its files)", path));
  if (!fs::is_regular_file(st)) throw Error(Errc::invalid_argument, fmt::format("{}: not a regular file", path));
  // The file, its container (at most its size plus the index) and the
  // restore are held at once: refuse what would not fit in this machine's
  // memory rather than be killed for it half-way.
  const std::uint64_t size = fs::file_size(path, ec);
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (!ec && pages > 0 && page > 0) {
    const auto memory = static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
    if (size > memory / 3)
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: {} bytes; measuring it needs three copies in memory ({} bytes) and this machine has "
                              "{} bytes: give a shard or a smaller file",
                              path, size, 3 * size, memory));
  }
}

std::vector<std::byte> read_whole(const std::string& path) {
  check_input(path);
  std::error_code ec;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw Error(Errc::io, fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  const auto size = fs::file_size(path, ec);
  if (ec) throw Error(Errc::io, fmt::format("{}: cannot read its size: {}", path, ec.message()));
  std::vector<std::byte> data(static_cast<std::size_t>(size));
  if (!data.empty() && std::fread(data.data(), 1, data.size(), f.get()) != data.size())
    throw Error(Errc::io, fmt::format("{}: read failed (file shorter than its size, or an I/O error)", path));
  return data;
}

struct Timing {
  double median_s = 0;
  std::size_t rounds = 0;
};

// One untimed round, then timed rounds until `seconds` of them (at least one).
template <class F>
Timing measure(F&& once, double seconds) {
  once();
  std::vector<double> t;
  double total = 0;
  do {
    const auto t0 = Clock::now();
    once();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    t.push_back(s);
    total += s;
  } while (total < seconds && t.size() < 100000);
  std::sort(t.begin(), t.end());
  const std::size_t n = t.size();
  return {n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2, n};
}

struct Row {
  std::string file, method;
  int level = 0;
  unsigned threads = 0;
  std::uint64_t original = 0, compressed = 0;
  Timing c, d;
};

double mib_s(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / (1 << 20) / seconds : 0.0;
}

void check_exact(const std::vector<std::byte>& data, std::span<const std::byte> restored, const Row& r) {
  if (restored.size() != data.size() ||
      (!data.empty() && std::memcmp(restored.data(), data.data(), data.size()) != 0))
    throw Error(Errc::internal, fmt::format("{}: {} level {} on {} threads: the restored bytes differ from the original",
                                            r.file, r.method, r.level, r.threads));
}

Row bench_mithril(const std::string& name, const std::vector<std::byte>& data, int level, unsigned threads,
                  const BenchArgs& a) {
  Row r{name, "mithril", level, threads, data.size(), 0, {}, {}};
  CompressOptions co;
  co.level = level;
  co.threads = threads;
  co.sync = false;
  if (!a.chunk_size.empty()) co.chunk_size = cache::parse_size(a.chunk_size);
  std::vector<std::byte> mcp;
  const MemoryAllocator reuse = [&mcp](std::uint64_t bound) {
    if (mcp.size() < bound) mcp.resize(static_cast<std::size_t>(bound));
    return std::span<std::byte>(mcp.data(), static_cast<std::size_t>(bound));
  };
  std::uint64_t size = 0;
  r.c = measure([&] { size = compress_to_memory(data, "", co, reuse, name); }, a.seconds);
  r.compressed = size;
  const std::span<const std::byte> container(mcp.data(), static_cast<std::size_t>(size));
  DecompressOptions d;
  d.threads = threads;
  d.check_digest = !a.no_digest;
  std::vector<std::byte> out(data.size());
  std::fill(out.begin(), out.end(), std::byte{0xa5});  // a restore that writes nothing cannot pass
  r.d = measure([&] { decompress_into(container, out, d, name); }, a.seconds);
  check_exact(data, out, r);
  return r;
}

Row bench_zstd(const std::string& name, const std::vector<std::byte>& data, int level, unsigned threads,
               const BenchArgs& a) {
  Row r{name, "zstd", level, threads, data.size(), 0, {}, {}};
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!cctx || !dctx) throw std::bad_alloc();
  auto ok = [](size_t rc, const char* what) {
    if (ZSTD_isError(rc)) throw Error(Errc::internal, fmt::format("zstd {}: {}", what, ZSTD_getErrorName(rc)));
    return rc;
  };
  ok(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level), "level");
  if (threads > 1) ok(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, static_cast<int>(threads)), "workers");
  std::vector<std::byte> z(ZSTD_compressBound(data.size()));
  std::size_t size = 0;
  r.c = measure([&] { size = ok(ZSTD_compress2(cctx.get(), z.data(), z.size(), data.data(), data.size()), "compress"); },
                a.seconds);
  r.compressed = size;
  std::vector<std::byte> out(data.size());
  std::fill(out.begin(), out.end(), std::byte{0xa5});
  std::size_t got = 0;
  r.d = measure([&] { got = ok(ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(), z.data(), size), "decompress"); },
                a.seconds);
  check_exact(data, std::span<const std::byte>(out.data(), got), r);
  return r;
}

nlohmann::json row_json(const Row& r) {
  return {{"file", r.file},
          {"method", r.method},
          {"level", r.level},
          {"threads", r.threads},
          {"original_bytes", r.original},
          {"compressed_bytes", r.compressed},
          {"ratio", r.compressed ? static_cast<double>(r.original) / static_cast<double>(r.compressed) : 0.0},
          {"compress_mib_s", mib_s(r.original, r.c.median_s)},
          {"decompress_mib_s", mib_s(r.original, r.d.median_s)},
          {"compress_rounds", r.c.rounds},
          {"decompress_rounds", r.d.rounds}};
}

void print_row(const Row& r, std::size_t name_width) {
  fmt::print("{:<{}}  {:<7}  {:>5}  {:>7}  {:>14}  {:>14}  {:>7.4f}  {:>10.1f}  {:>10.1f}  {:>10}\n", r.file, name_width,
             r.method, r.level, r.threads, r.original, r.compressed,
             r.compressed ? static_cast<double>(r.original) / static_cast<double>(r.compressed) : 0.0,
             mib_s(r.original, r.c.median_s), mib_s(r.original, r.d.median_s),
             fmt::format("{}/{}", r.c.rounds, r.d.rounds));
  std::fflush(stdout);
}

void run_bench(const BenchArgs& a) {
  if (!(a.seconds >= 0) || a.seconds > 3600)
    throw Error(Errc::invalid_argument, fmt::format("--seconds {}: expected 0..3600", a.seconds));
  const std::vector<int> levels = parse_list(a.levels, k_min_level, k_max_level, "--level");
  std::vector<unsigned> threads;
  for (const int t : parse_list(a.threads, 0, 4096, "--threads")) {
    const unsigned n = t == 0 ? all_cores() : static_cast<unsigned>(t);
    if (std::find(threads.begin(), threads.end(), n) == threads.end()) threads.push_back(n);
  }
  if (a.zstd_level != 0 && (a.zstd_level < ZSTD_minCLevel() || a.zstd_level > ZSTD_maxCLevel()))
    throw Error(Errc::invalid_argument,
                fmt::format("--zstd {}: expected a zstd level {}..{}", a.zstd_level, ZSTD_minCLevel(), ZSTD_maxCLevel()));
  if (!a.chunk_size.empty()) (void)cache::parse_size(a.chunk_size);  // a bad size fails before any work
  for (const auto& f : a.files) check_input(f);

  const auto k = kernels();
  const std::string cpu = mithril::cpu_model();
  const std::string kernel_text =
      fmt::format("rans encode {}, rans decode {}, byte grouping {}, blake3 {}, xxh3 {}, pairs {}, split {}, "
                  "streaming copy {}",
                  k.rans_encode, k.rans_decode, k.byte_grouping, k.blake3, k.xxh3, k.pairs, k.split, k.streaming_copy);
  const std::string checks = a.no_digest ? "every chunk's XXH3" : "every chunk's XXH3 and the whole-file BLAKE3";
  std::size_t name_width = 4;
  for (const auto& f : a.files) name_width = std::max(name_width, fs::path(f).filename().string().size());

  if (!a.json) {
    fmt::print("mithril {} bench: {}, {} cores; kernels: {}\n", version(), cpu, all_cores(), kernel_text);
    fmt::print("In memory, one reused buffer each way: one warm-up round, then timed rounds for {} s (at least one) "
               "each way; the median round, in MiB/s of original bytes.\n",
               a.seconds);
    fmt::print("Decompression checks {}.{}\n\n", checks,
               a.zstd_level ? fmt::format(" zstd rows: libzstd {} in memory, no checksum.", ZSTD_versionString())
                            : std::string());
    fmt::print("{:<{}}  {:<7}  {:>5}  {:>7}  {:>14}  {:>14}  {:>7}  {:>10}  {:>10}  {:>10}\n", "file", name_width, "method",
               "level", "threads", "original", "compressed", "ratio", "comp MiB/s", "dec MiB/s", "rounds c/d");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& path : a.files) {
    const std::vector<std::byte> data = read_whole(path);
    const std::string name = fs::path(path).filename().string();
    for (const unsigned t : threads) {
      for (const int level : levels) {
        const Row r = bench_mithril(name, data, level, t, a);
        if (a.json) rows.push_back(row_json(r)); else print_row(r, name_width);
      }
      if (a.zstd_level != 0) {
        const Row r = bench_zstd(name, data, a.zstd_level, t, a);
        if (a.json) rows.push_back(row_json(r)); else print_row(r, name_width);
      }
    }
  }
  if (a.json) {
    const nlohmann::json doc = {{"mithril", version()},
                                {"cpu", cpu},
                                {"cores", all_cores()},
                                {"kernels", {{"rans_encode", k.rans_encode},
                                             {"rans_decode", k.rans_decode},
                                             {"byte_grouping", k.byte_grouping},
                                             {"blake3", k.blake3},
                                             {"xxh3", k.xxh3},
                                             {"pairs", k.pairs},
                                             {"split", k.split},
                                             {"streaming_copy", k.streaming_copy}}},
                                {"seconds", a.seconds},
                                {"decompress_checks_digest", !a.no_digest},
                                {"zstd_version", a.zstd_level ? ZSTD_versionString() : ""},
                                {"rows", rows}};
    print_json(doc, 2);
  }
}

}  // namespace

void register_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* bench = app.add_subcommand("bench", "Measure compression and decompression of files in memory on this machine (as zstd -b)");
  bench->add_option("files", a->files, "Files to measure (each read into memory once)")->required();
  bench->add_option("-l,--level", a->levels, "Levels: 3, 1-5 or 1,3,12 (default 3)");
  bench->add_option("-T,--threads", a->threads, "Worker threads: 1, 1,2 or 1-4; 0 = all cores (default 0)");
  bench->add_option("-i,--seconds", a->seconds, "Timed seconds each way per row, after one warm-up round (default 1)");
  bench->add_option("--zstd", a->zstd_level, "Also measure libzstd at this level on the same bytes, in memory (default 0: no zstd rows)");
  bench->add_flag("--no-check,--no-digest", a->no_digest,
                  "Decompression checks chunk checksums only, not the whole-file BLAKE3 (as decompress --no-check)");
  bench->add_option("--chunk-size", a->chunk_size, "Chunk size, e.g. 4M (default 4 MiB)");
  bench->add_flag("--json", a->json, "One JSON document (machine, kernels, rows) instead of the table");
  bench->callback([a] { run_bench(*a); });
}

}  // namespace mithril::cli
