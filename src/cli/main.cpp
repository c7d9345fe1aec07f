// mithril — command-line entry point. Maps mithril::Error codes to exit
// statuses in one place:
//   0 success, 1 failure reported by the command itself (e.g. verify found
//   damage), 2 usage error, 3 bad or corrupt input, 4 I/O error,
//   5 output exists (use -f), 6 unsupported, 70 internal error.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include <fmt/core.h>

#include <string>
#include <string_view>

#include "cli/commands.hpp"
#include "mithril/error.hpp"
#include "mithril/version.hpp"
#include "util/mapped_file.hpp"

namespace {

extern "C" void on_fatal_signal(int sig) {
  mithril::remove_pending_outputs();
  if (mithril::defer_signal(sig)) return;  // a remote upload aborts itself, then main re-raises
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// SIGBUS on a page of a mapped input past the end it has now: the file shrank
// while it was read (truncated, or rewritten in place by another process).
// Said, naming the file, with the partial output removed: exit 4 (I/O), as
// for any input that cannot be read. Any other SIGBUS is not ours to explain.
extern "C" void on_bus_error(int sig, siginfo_t* info, void*) {
  const char* path = info ? mithril::util::mapped_file_at(info->si_addr) : nullptr;
  if (!path) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  mithril::remove_pending_outputs();
  auto say = [](const char* s) { (void)!::write(2, s, std::strlen(s)); };
  say("mithril: error: ");
  say(path);
  say(": the file shrank while it was being read (truncated or rewritten by another process); nothing written\n");
  ::_exit(4);
}

void reraise_deferred_signal() {
  if (const int sig = mithril::deferred_signal()) {
    std::fflush(stdout);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

// `mithril --version -v` (the flag may come before or after --version, which
// CLI11 handles while parsing): also the kernels this CPU runs, and the CPU.
std::string version_text(int argc, char** argv) {
  std::string text = std::string("mithril ") + mithril::version();
  bool verbose = false;
  for (int i = 1; i < argc; ++i)
    verbose |= std::string_view(argv[i]) == "-v" || std::string_view(argv[i]) == "--verbose";
  if (verbose) {
    const auto k = mithril::kernels();
    text += fmt::format(
        "\nkernels: rans encode {}, rans decode {}, byte grouping {}, blake3 {}, xxh3 {}, streaming copy {}",
        k.rans_encode, k.rans_decode, k.byte_grouping, k.blake3, k.xxh3, k.streaming_copy);
    if (const auto cap = mithril::isa_cap(); !cap.level.empty())
      text += fmt::format(" (capped at {} by MITHRIL_ISA)", cap.level);
    // Exponent planes: two bytes a rANS symbol (codec/rans_pairs.hpp), or at
    // levels 1-2 where pairs do not pay, one portable Huffman kernel (codec/huff.hpp).
    text += fmt::format("\npairs: {}, two bytes a rANS symbol (exponent planes); split: {}, low bits stored (fp16 high bytes, levels 1-2)",
                        k.pairs, k.split);
    text += "\nhuffman: portable, 6 streams, up to 6 symbols a lookup (levels 1-2)";
    text += "\nrans kernels: " + k.rans_choice;
    text += "\ncpu: " + mithril::cpu_model();
  }
  return text;
}

int exit_status(mithril::Errc code) {
  switch (code) {
    case mithril::Errc::invalid_argument: return 2;
    case mithril::Errc::corrupt: return 3;
    case mithril::Errc::not_found: return 4;
    case mithril::Errc::io: return 4;
    case mithril::Errc::exists: return 5;
    case mithril::Errc::unsupported: return 6;
    case mithril::Errc::remote_unavailable: return 7;
    case mithril::Errc::internal: return 70;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, on_fatal_signal);
  std::signal(SIGTERM, on_fatal_signal);
  std::signal(SIGHUP, on_fatal_signal);
  // A write past `ulimit -f` fails with EFBIG, reported naming the file with
  // the partial output removed, instead of SIGXFSZ killing the process and
  // leaving its temporary behind (CPython ignores it the same way).
  std::signal(SIGXFSZ, SIG_IGN);
  struct sigaction bus {};
  bus.sa_sigaction = on_bus_error;
  bus.sa_flags = SA_SIGINFO;
  sigemptyset(&bus.sa_mask);
  ::sigaction(SIGBUS, &bus, nullptr);
  // As zstd does with a ZSTD_CLEVEL it cannot read: said, then ignored.
  if (const auto cap = mithril::isa_cap(); !cap.rejected.empty())
    fmt::print(stderr, "mithril: warning: ignoring MITHRIL_ISA={}: expected auto, avx512, avx2, sse2 or scalar\n",
               cap.rejected);

  CLI::App app{"Mithril: lossless checkpoint compression and a torch.compile cache manager", "mithril"};
  app.require_subcommand(1);
  app.fallthrough();  // global flags (-q, -v) may follow the subcommand
  app.set_version_flag("-V,--version", version_text(argc, argv));
  mithril::cli::GlobalOptions global;
  app.add_flag("-q,--quiet", global.quiet, "No progress bar or summary line");
  app.add_flag("-v,--verbose", global.verbose, "More detail");
  int exit_code = 0;
  mithril::cli::register_checkpoint_commands(app, global, exit_code);
  mithril::cli::register_series_commands(app, global, exit_code);
  mithril::cli::register_cache_commands(app, global, exit_code);
  mithril::cli::register_convert_commands(app, global, exit_code);
  mithril::cli::register_bench_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; every usage error exits 2 (CLI11's own codes
    // are internal numbers such as 109 that no caller could rely on).
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const mithril::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mithril: error: {}\n", e.what());
    reraise_deferred_signal();
    return exit_status(e.code());
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "mithril: error: out of memory\n");
    return 70;
  } catch (const std::exception& e) {
    fmt::print(stderr, "mithril: error: {}\n", e.what());
    return 70;
  }
  reraise_deferred_signal();  // the signal came too late to stop the upload
  return exit_code;
}
