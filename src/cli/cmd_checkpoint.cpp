// cli/cmd_checkpoint.cpp — compress, decompress (files, directories, - for
// stdin and stdout), info, verify.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cache/fs_util.hpp"
#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "mithril/checkpoint.hpp"
#include "mithril/directory.hpp"
#include "mithril/error.hpp"
#include "mithril/tensors.hpp"

namespace mithril::cli {
namespace {

namespace fs = std::filesystem;

std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

double ratio(std::uint64_t orig, std::uint64_t stored) {
  return stored ? static_cast<double>(orig) / static_cast<double>(stored) : 0.0;
}

bool is_url(const std::string& s) {
  for (const char* scheme : {"s3://", "redis://", "file://"})
    if (s.rfind(scheme, 0) == 0) return true;
  return false;
}

// One line per file of a directory checkpoint, then the totals (as the
// single-file summary: input, sizes, ratio, time, speed, output).
void print_directory(const DirectoryResult& r, const fs::path& in, const fs::path& out, bool restored) {
  for (const auto& f : r.files) {
    if (restored)
      fmt::print(stderr, "  {}: {}\n", f.name, format_bytes(f.bytes));
    else if (f.compressed)
      fmt::print(stderr, "  {}: {} -> {} ({}, ratio {:.3f})\n", f.name, format_bytes(f.bytes), format_bytes(f.stored_bytes),
                 f.source_kind == "raw" ? "raw bytes" : fmt::format("{}, {} tensors", f.source_kind, f.tensors),
                 ratio(f.bytes, f.stored_bytes));
    else
      fmt::print(stderr, "  {}: {} (copied)\n", f.name, format_bytes(f.bytes));
  }
  const std::uint64_t from = restored ? r.output_bytes : r.source_bytes, to = restored ? r.source_bytes : r.output_bytes;
  fmt::print(stderr, "{}: {} files, {} -> {} (ratio {:.3f}) in {:.2f} s, {:.0f} MiB/s -> {}\n", in.string(),
             r.files.size(), format_bytes(from), format_bytes(to), ratio(r.source_bytes, r.output_bytes), r.seconds,
             mib_per_s(r.source_bytes, r.seconds), out.string());
}

struct CompressArgs {
  std::string input, output, base, chunk_size, endpoint;
  int level = k_default_level;
  unsigned threads = 0;
  bool force = false;
  bool no_sync = false;
  std::vector<std::string> meta;
};

struct DecompressArgs {
  std::string input, output, base, endpoint;
  unsigned threads = 0;
  bool force = false;
  bool sync = false;
  bool no_check = false;
};

// "dir/" -> "dir", so that "dir/" + ".mcp" names a sibling, not a file inside.
std::string without_trailing_slash(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// `-` as an input is stdin, as an output stdout (as for zstd). A container
// is read whole before anything is decoded (its index is at its end), and
// a checkpoint is planned whole before it is coded: stdin is read into
// memory first. Binary data never goes to, or comes from, a terminal.
constexpr const char* k_stdio = "-";

std::vector<std::byte> read_stdin() {
  if (::isatty(STDIN_FILENO))
    throw Error(Errc::invalid_argument, "stdin is a terminal: pipe the input in, or name a file");
  std::vector<std::byte> data;
  std::size_t size = 0;
  // A redirected file (`< model.safetensors`) says its size: one buffer of
  // it, not a doubling one (a pipe does not).
  struct stat st {};
  if (::fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
    data.resize(static_cast<std::size_t>(st.st_size) + 1);
  for (;;) {
    if (data.size() == size) data.resize(std::max<std::size_t>(data.size() * 2, 4u << 20));
    const ssize_t n = ::read(STDIN_FILENO, data.data() + size, data.size() - size);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(Errc::io, fmt::format("stdin: read failed: {}", std::strerror(errno)));
    }
    size += static_cast<std::size_t>(n);
  }
  data.resize(size);
  return data;
}

// stdout as an OrderedWriter: full writes, EINTR retried; any other failure
// (a closed pipe: EPIPE where SIGPIPE is ignored) throws.
OrderedWriter stdout_writer() {
  if (::isatty(STDOUT_FILENO))
    throw Error(Errc::invalid_argument, "stdout is a terminal: not writing binary data there (redirect it, or use -o FILE)");
  return [](std::span<const std::byte> b) {
    const auto* p = reinterpret_cast<const char*>(b.data());
    std::size_t left = b.size();
    while (left > 0) {
      const ssize_t n = ::write(STDOUT_FILENO, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(Errc::io, fmt::format("stdout: write failed: {}", std::strerror(errno)));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  };
}

void run_compress(const CompressArgs& a, const GlobalOptions& g) {
  const fs::path in = a.input;
  const bool from_stdin = a.input == k_stdio, to_stdout = a.output == k_stdio;
  if (from_stdin && a.output.empty())
    throw Error(Errc::invalid_argument, "compressing stdin: say where to write with -o OUT (or -o - for stdout)");
  const fs::path out = a.output.empty() ? fs::path(without_trailing_slash(a.input) + ".mcp") : fs::path(a.output);
  CompressOptions o;
  o.level = a.level;
  o.threads = a.threads;
  o.force = a.force;
  o.remote.endpoint = a.endpoint;
  o.sync = !a.no_sync;
  if (!a.chunk_size.empty()) o.chunk_size = cache::parse_size(a.chunk_size);
  if (!a.base.empty()) o.base = a.base;
  for (const auto& kv : a.meta) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(Errc::invalid_argument, fmt::format("--meta expects KEY=VALUE, got '{}'", kv));
    o.metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  ProgressBar bar("compress", !g.quiet);
  o.progress = [&](std::uint64_t d, std::uint64_t t) { bar.update(d, t); };
  o.warn = [&](const std::string& w) { fmt::print(stderr, "mithril: warning: {}\n", w); };
  if (!from_stdin && !is_url(a.input) && fs::is_directory(in)) {
    if (to_stdout) throw Error(Errc::invalid_argument, fmt::format("{}: a directory compresses into a directory, not stdout", a.input));
    const auto r = compress_directory(in, out, o);
    bar.finish();
    if (!g.quiet) print_directory(r, in, out, false);
    return;
  }
  CompressResult r;
  if (from_stdin) {
    const std::vector<std::byte> data = read_stdin();
    r = to_stdout ? compress_bytes(data, "stdin", stdout_writer(), o) : compress_bytes(data, "stdin", out, o);
  } else {
    r = to_stdout ? compress_file(in, stdout_writer(), o) : compress_file(in, out, o);
  }
  bar.finish();
  if (!g.quiet)
    fmt::print(stderr, "{}: {} -> {} ({}, ratio {:.3f}, {:.1f}%) in {:.2f} s, {:.0f} MiB/s -> {}\n",
               from_stdin ? "stdin" : in.string(),
               format_bytes(r.source_bytes), format_bytes(r.output_bytes),
               r.source_kind == "raw" ? "raw bytes" : fmt::format("{}, {} tensors", r.source_kind, r.tensors),
               ratio(r.source_bytes, r.output_bytes),
               r.source_bytes ? 100.0 * static_cast<double>(r.output_bytes) / static_cast<double>(r.source_bytes) : 0.0,
               r.seconds, mib_per_s(r.source_bytes, r.seconds), to_stdout ? "stdout" : out.string());
}

void run_decompress(const DecompressArgs& a, const GlobalOptions& g) {
  const bool from_stdin = a.input == k_stdio, to_stdout = a.output == k_stdio;
  const fs::path in = is_url(a.input) ? a.input : without_trailing_slash(a.input);
  const bool directory = !from_stdin && !is_url(a.input) && fs::is_directory(in);
  if (from_stdin && a.output.empty())
    throw Error(Errc::invalid_argument, "decompressing stdin: say where to write with -o OUT (or -o - for stdout)");
  if (directory && to_stdout)
    throw Error(Errc::invalid_argument, fmt::format("{}: a directory restores into a directory, not stdout", a.input));
  fs::path out = a.output;
  if (out.empty()) {
    if (in.extension() != ".mcp")
      throw Error(Errc::invalid_argument,
                  fmt::format("{}: does not end in .mcp; say where to write with -o OUT", in.string()));
    out = is_url(a.input) ? in.filename() : in;  // a remote input restores into the working directory
    out.replace_extension();
  }
  DecompressOptions o;
  o.threads = a.threads;
  o.force = a.force;
  o.remote.endpoint = a.endpoint;
  o.sync = a.sync;
  o.check_digest = !a.no_check;
  if (!a.base.empty()) o.base = a.base;
  ProgressBar bar("decompress", !g.quiet);
  o.progress = [&](std::uint64_t d, std::uint64_t t) { bar.update(d, t); };
  if (directory) {
    const auto r = decompress_directory(in, out, o);
    bar.finish();
    if (!g.quiet) print_directory(r, in, out, true);
    return;
  }
  DecompressResult r;
  if (from_stdin) {
    const std::vector<std::byte> mcp = read_stdin();
    r = to_stdout ? decompress_bytes(mcp, "stdin", stdout_writer(), o) : decompress_bytes(mcp, "stdin", out, o);
  } else {
    r = to_stdout ? decompress_file(in, stdout_writer(), o) : decompress_file(in, out, o);
  }
  bar.finish();
  if (!g.quiet)
    fmt::print(stderr, "{}: {} -> {} in {:.2f} s, {:.0f} MiB/s -> {}\n", from_stdin ? "stdin" : in.string(),
               format_bytes(r.input_bytes), format_bytes(r.output_bytes), r.seconds,
               mib_per_s(r.output_bytes, r.seconds), to_stdout ? "stdout" : out.string());
}

int run_verify(const std::string& input, const std::string& base, unsigned threads, const std::string& endpoint,
               const GlobalOptions& g) {
  VerifyOptions o;
  o.threads = threads;
  o.remote.endpoint = endpoint;
  if (!base.empty()) o.base = base;
  ProgressBar bar("verify", !g.quiet);
  o.progress = [&](std::uint64_t d, std::uint64_t t) { bar.update(d, t); };
  const bool from_stdin = input == k_stdio;
  const bool directory = !from_stdin && !is_url(input) && fs::is_directory(input);
  VerifyResult r;
  if (from_stdin)
    r = verify_bytes(read_stdin(), "stdin", o);
  else
    r = directory ? verify_directory(input, o) : verify_file(input, o);
  bar.finish();
  const std::string name = from_stdin ? "stdin" : input;
  for (const auto& p : r.problems) fmt::print(stderr, "mithril: error: {}\n", p);
  if (!r.ok) {
    fmt::print(stderr, "{}: DAMAGED ({} problem{})\n", name, r.problems.size(), r.problems.size() == 1 ? "" : "s");
    return 3;  // corrupt input, as for every other command (README)
  }
  if (!g.quiet)
    fmt::print("{}: OK ({} chunks, {} restored bytes, BLAKE3 verified) in {:.2f} s\n", name, r.chunks,
               r.source_bytes, r.seconds);
  return 0;
}

void run_directory_info(const std::string& input, bool as_json) {
  const DirectoryResult r = describe_directory(input);
  const bool compressed = is_compressed_directory(input);
  std::size_t tensors = 0;
  for (const auto& f : r.files) tensors += f.tensors;
  if (as_json) {
    nlohmann::ordered_json j;
    j["path"] = input;
    j["kind"] = compressed ? "mcp-directory" : "directory";
    auto files = nlohmann::ordered_json::array();
    for (const auto& f : r.files) {
      nlohmann::ordered_json jf{{"name", f.name}, {"bytes", f.bytes}};
      if (compressed) {
        jf["stored"] = f.stored;
        jf["stored_bytes"] = f.stored_bytes;
        jf["ratio"] = ratio(f.bytes, f.stored_bytes);
        jf["blake3"] = f.blake3;
      }
      jf["kind"] = f.source_kind.empty() ? "copy" : f.source_kind;
      jf["tensors"] = f.tensors;
      files.push_back(std::move(jf));
    }
    j["files"] = std::move(files);
    j["totals"] = {{"files", r.files.size()}, {"tensors", tensors}, {"bytes", r.source_bytes}};
    if (compressed) {
      j["totals"]["stored_bytes"] = r.output_bytes;
      j["totals"]["ratio"] = ratio(r.source_bytes, r.output_bytes);
    }
    print_json(j, 2);
    return;
  }
  fmt::print("{}: {}, {} files, {} tensors\n", input,
             compressed ? "Mithril compressed directory" : "directory", r.files.size(), tensors);
  std::size_t wname = 4;
  for (const auto& f : r.files) wname = std::max(wname, f.name.size());
  wname = std::min<std::size_t>(wname, 60);
  fmt::print("  {:<{}}  {:<12} {:>8} {:>14} {:>14} {:>7}\n", "file", wname, "kind", "tensors", "bytes",
             compressed ? "stored" : "", compressed ? "ratio" : "");
  for (const auto& f : r.files) {
    if (compressed)
      fmt::print("  {:<{}}  {:<12} {:>8} {:>14} {:>14} {:>7.3f}\n", f.name, wname,
                 f.source_kind.empty() ? "copy" : f.source_kind, f.tensors, f.bytes, f.stored_bytes,
                 ratio(f.bytes, f.stored_bytes));
    else
      fmt::print("  {:<{}}  {:<12} {:>8} {:>14}\n", f.name, wname, f.source_kind.empty() ? "other" : f.source_kind,
                 f.tensors, f.bytes);
  }
  if (compressed)
    fmt::print("  total: {} -> {} (ratio {:.3f})\n", r.source_bytes, r.output_bytes, ratio(r.source_bytes, r.output_bytes));
  else
    fmt::print("  total: {} bytes\n", r.source_bytes);
}

void run_info(const std::string& input, bool as_json, const std::string& endpoint) {
  if (input == k_stdio)
    throw Error(Errc::invalid_argument, "info reads a file or URL, not stdin (an .mcp's index is at its end): save it first");
  if (!is_url(input) && fs::is_directory(input)) return run_directory_info(input, as_json);
  const FileInfo info = describe_file(input, RemoteOptions{endpoint});
  std::uint64_t tensor_bytes = 0, tensor_stored = 0;
  for (const auto& t : info.tensors) {
    tensor_bytes += t.bytes;
    tensor_stored += t.stored_bytes.value_or(0);
  }
  if (as_json) {
    nlohmann::ordered_json j;
    j["path"] = info.path;
    j["kind"] = info.kind;
    j["file_bytes"] = info.file_bytes;
    if (info.kind == "mcp") {
      j["format_version"] = info.format_version;
      j["source"] = {{"name", info.source_name},
                     {"kind", info.source_kind},
                     {"bytes", info.source_bytes},
                     {"blake3", info.source_blake3}};
      j["base"] = info.base ? nlohmann::ordered_json{{"name", info.base->name},
                                                     {"bytes", info.base->size},
                                                     {"blake3", info.base->blake3}}
                            : nlohmann::ordered_json(nullptr);
      j["chunks"] = info.chunks;
      j["ratio"] = ratio(info.source_bytes, info.file_bytes);
    }
    j["metadata"] = info.metadata;
    auto tensors = nlohmann::ordered_json::array();
    for (const auto& t : info.tensors) {
      nlohmann::ordered_json jt{{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"bytes", t.bytes}};
      if (info.kind == "torch") {
        jt["storage"] = t.storage;
        jt["storage_offset"] = t.storage_offset;
        jt["contiguous"] = t.contiguous;
      }
      if (t.stored_bytes) {
        jt["stored_bytes"] = *t.stored_bytes;
        jt["ratio"] = ratio(t.bytes, *t.stored_bytes);
        jt["chunks"] = t.chunks;
      }
      tensors.push_back(std::move(jt));
    }
    j["tensors"] = std::move(tensors);
    if (info.kind == "torch") {
      auto values = nlohmann::ordered_json::array();
      for (const auto& v : info.values) values.push_back({{"name", v.name}, {"repr", v.repr}});
      j["values"] = std::move(values);
    }
    j["totals"] = {{"tensors", info.tensors.size()}, {"tensor_bytes", tensor_bytes}, {"other_bytes", info.other_bytes}};
    if (info.kind == "torch") j["totals"]["storages"] = info.storages;
    if (info.kind == "mcp") {
      j["totals"]["tensor_stored_bytes"] = tensor_stored;
      j["totals"]["other_stored_bytes"] = info.other_stored_bytes.value_or(0);
    }
    print_json(j, 2);
    return;
  }
  const bool mcp = info.kind == "mcp";
  if (mcp) {
    fmt::print("{}: Mithril .mcp v{}, {} of {} ({}), {} chunks\n", info.path, info.format_version,
               format_bytes(info.file_bytes), info.source_name,
               info.source_kind == "raw" ? "raw bytes" : info.source_kind, info.chunks);
    fmt::print("  original: {} bytes, BLAKE3 {}\n", info.source_bytes, info.source_blake3);
    if (info.base)
      fmt::print("  delta against: {} ({} bytes, BLAKE3 {})\n", info.base->name, info.base->size, info.base->blake3);
  } else if (info.kind == "torch") {
    fmt::print("{}: torch.save (zip), {}, {} tensors in {} storages\n", info.path, format_bytes(info.file_bytes),
               info.tensors.size(), info.storages);
  } else {
    fmt::print("{}: safetensors, {}, {} tensors\n", info.path, format_bytes(info.file_bytes), info.tensors.size());
  }
  const bool torch = info.kind == "torch";
  for (const auto& [k, v] : info.metadata) fmt::print("  metadata {} = {}\n", k, v);
  if (!info.tensors.empty()) {
    std::size_t wname = 6;
    for (const auto& t : info.tensors) wname = std::max(wname, t.name.size());
    wname = std::min<std::size_t>(wname, 60);
    if (mcp)
      fmt::print("  {:<{}}  {:<8} {:<20} {:>14} {:>14} {:>7}\n", "tensor", wname, "dtype", "shape", "bytes", "stored",
                 "ratio");
    else if (torch)
      fmt::print("  {:<{}}  {:<8} {:<20} {:>14}  {}\n", "tensor", wname, "dtype", "shape", "bytes", "storage");
    else
      fmt::print("  {:<{}}  {:<8} {:<20} {:>14}\n", "tensor", wname, "dtype", "shape", "bytes");
    for (const auto& t : info.tensors) {
      if (mcp)
        fmt::print("  {:<{}}  {:<8} {:<20} {:>14} {:>14} {:>7.3f}\n", t.name, wname, t.dtype, shape_string(t.shape),
                   t.bytes, t.stored_bytes.value_or(0), ratio(t.bytes, t.stored_bytes.value_or(0)));
      else if (torch)
        fmt::print("  {:<{}}  {:<8} {:<20} {:>14}  {}{}{}\n", t.name.empty() ? "<root>" : t.name, wname, t.dtype,
                   shape_string(t.shape), t.bytes, t.storage,
                   t.storage_offset ? fmt::format(" +{}", t.storage_offset) : "", t.contiguous ? "" : " (strided)");
      else
        fmt::print("  {:<{}}  {:<8} {:<20} {:>14}\n", t.name, wname, t.dtype, shape_string(t.shape), t.bytes);
    }
  }
  if (mcp) {
    fmt::print("  total: {} tensors, {} -> {} (ratio {:.3f}); other bytes {} -> {}; file ratio {:.3f}\n",
               info.tensors.size(), tensor_bytes, tensor_stored, ratio(tensor_bytes, tensor_stored), info.other_bytes,
               info.other_stored_bytes.value_or(0), ratio(info.source_bytes, info.file_bytes));
  } else if (torch) {
    for (const auto& v : info.values) fmt::print("  value {} = {}\n", v.name.empty() ? "<root>" : v.name, v.repr);
    fmt::print("  total: {} tensors in {} storages of {} bytes, {} other bytes\n", info.tensors.size(), info.storages,
               info.file_bytes - info.other_bytes, info.other_bytes);
  } else {
    fmt::print("  total: {} tensors, {} tensor bytes, {} header bytes\n", info.tensors.size(), tensor_bytes,
               info.other_bytes);
  }
}

struct TensorArgs {
  std::string input, name, output, base, endpoint;
  unsigned threads = 0;
};

void run_tensor(const TensorArgs& a, const GlobalOptions& g) {
  if (a.input == k_stdio)
    throw Error(Errc::invalid_argument, "tensor reads a file or URL, not stdin (it reads only the tensor's chunks): save it first");
  ReaderOptions o;
  o.threads = a.threads;
  o.remote.endpoint = a.endpoint;
  if (!a.base.empty()) o.base = a.base;
  const CheckpointReader reader(a.input, o);
  const auto i = reader.find(a.name);
  if (!i) throw Error(Errc::not_found, fmt::format("{}: no tensor '{}'", a.input, a.name));
  const auto& t = reader.tensors()[*i];
  std::vector<std::byte> data(static_cast<std::size_t>(t.bytes));
  reader.read_tensor(*i, data);
  std::FILE* f = a.output == "-" ? stdout : std::fopen(a.output.c_str(), "wb");
  if (!f) throw Error(Errc::io, fmt::format("{}: cannot create", a.output));
  const bool ok = data.empty() || std::fwrite(data.data(), 1, data.size(), f) == data.size();
  const bool closed = f == stdout ? std::fflush(f) == 0 : std::fclose(f) == 0;
  if (!ok || !closed) throw Error(Errc::io, fmt::format("{}: write failed", a.output));
  if (!g.quiet)
    fmt::print(stderr, "{}: tensor {} {} {}: {} bytes; read {} bytes of the container\n", a.input, t.name, t.dtype,
               shape_string(t.shape), data.size(), reader.bytes_read());
}

}  // namespace

void register_checkpoint_commands(CLI::App& app, const GlobalOptions& global, int& exit_code) {
  auto c = std::make_shared<CompressArgs>();
  auto* compress = app.add_subcommand("compress", "Compress a checkpoint (safetensors, torch.save, any file, or a directory of them such as a Hugging Face sharded checkpoint) into .mcp");
  compress->add_option("input", c->input, "Checkpoint to compress (- for stdin)")->required();
  compress->add_option("-o,--output", c->output, "Output file (default: INPUT.mcp; - for stdout)");
  compress->add_option("-l,--level", c->level, "Level 1..19 (default 3); 1-2 code exponent planes with Huffman (faster to decode, a little larger); higher tries zstd on more planes")
      ->check(CLI::Range(k_min_level, k_max_level));
  compress->add_option("-T,--threads", c->threads, "Worker threads (default: all cores)");
  compress->add_flag("-f,--force", c->force, "Overwrite an existing output");
  compress->add_flag("--no-sync", c->no_sync, "Do not fsync the output before renaming it into place");
  compress->add_option("--base", c->base, "Delta: code against this earlier checkpoint (safetensors, torch.save or .mcp)");
  compress->add_option("--chunk-size", c->chunk_size, "Chunk size, e.g. 4M (default 4 MiB)");
  compress->add_option("--meta", c->meta, "KEY=VALUE metadata to store (repeatable)");
  compress->add_option("--endpoint", c->endpoint, "S3 endpoint URL for s3:// outputs and bases (default: $AWS_ENDPOINT_URL)");
  compress->callback([c, &global] { run_compress(*c, global); });

  auto d = std::make_shared<DecompressArgs>();
  auto* decompress = app.add_subcommand("decompress", "Restore the original file from an .mcp");
  decompress->add_option("input", d->input, "The .mcp file, or a directory made by `compress DIR` (- for stdin)")->required();
  decompress->add_option("-o,--output", d->output, "Output file (default: INPUT without .mcp; - for stdout)");
  decompress->add_option("-T,--threads", d->threads, "Worker threads (default: all cores)");
  decompress->add_flag("-f,--force", d->force, "Overwrite an existing output");
  decompress->add_flag("--sync", d->sync, "fsync the restored file before renaming it into place");
  decompress->add_flag("--no-check,--no-digest", d->no_check,
                       "Skip recomputing the whole-file BLAKE3 (a quarter to a third of the CPU); every chunk's "
                       "XXH3-64 is still checked (`mithril verify` does both)");
  decompress->add_option("--base", d->base, "The base checkpoint of a delta file");
  decompress->add_option("--endpoint", d->endpoint, "S3 endpoint URL for s3:// inputs (default: $AWS_ENDPOINT_URL)");
  decompress->callback([d, &global] { run_decompress(*d, global); });

  struct InfoArgs {
    std::string input, endpoint;
    bool json = false;
  };
  auto info_args = std::make_shared<InfoArgs>();
  auto* info = app.add_subcommand("info", "List the tensors of an .mcp, safetensors or torch.save file");
  info->add_option("file", info_args->input, "File (or URL of an .mcp) to describe")->required();
  info->add_flag("--json", info_args->json, "Machine-readable output");
  info->add_option("--endpoint", info_args->endpoint, "S3 endpoint URL (default: $AWS_ENDPOINT_URL)");
  info->callback([info_args] { run_info(info_args->input, info_args->json, info_args->endpoint); });

  struct VerifyArgs {
    std::string input, base, endpoint;
    unsigned threads = 0;
  };
  auto v = std::make_shared<VerifyArgs>();
  auto* verify = app.add_subcommand("verify", "Check every checksum and the whole-file digest; writes nothing");
  verify->add_option("file", v->input, "The .mcp file (- for stdin)")->required();
  verify->add_option("--base", v->base, "The base checkpoint of a delta file");
  verify->add_option("-T,--threads", v->threads, "Worker threads (default: all cores)");
  verify->add_option("--endpoint", v->endpoint, "S3 endpoint URL (default: $AWS_ENDPOINT_URL)");
  verify->callback([v, &global, &exit_code] { exit_code = run_verify(v->input, v->base, v->threads, v->endpoint, global); });

  auto t = std::make_shared<TensorArgs>();
  auto* tensor = app.add_subcommand("tensor", "Extract one tensor's raw bytes from an .mcp, reading only its chunks");
  tensor->add_option("file", t->input, "The .mcp file or URL")->required();
  tensor->add_option("name", t->name, "Tensor name")->required();
  tensor->add_option("-o,--output", t->output, "Output file ('-' for stdout)")->required();
  tensor->add_option("--base", t->base, "The base checkpoint of a delta file");
  tensor->add_option("-T,--threads", t->threads, "Worker threads (default: all cores)");
  tensor->add_option("--endpoint", t->endpoint, "S3 endpoint URL (default: $AWS_ENDPOINT_URL)");
  tensor->callback([t, &global] { run_tensor(*t, global); });
}

}  // namespace mithril::cli
