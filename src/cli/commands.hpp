// cli/commands.hpp — each command group registers its subcommands here.
// The CLI uses only the public API (include/mithril/).
#pragma once

#include <CLI/CLI.hpp>

namespace mithril::cli {

// Global options every command sees.
struct GlobalOptions {
  bool quiet = false;    // -q: no progress bar, no summary line
  bool verbose = false;  // -v: more detail
};

// Each registrar adds its subcommands to `app`; the callbacks run the command
// and return through `exit_code`. Errors are thrown as mithril::Error and
// mapped to exit statuses in main.cpp.
void register_checkpoint_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void register_series_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void register_cache_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void register_convert_commands(CLI::App& app, const GlobalOptions& global, int& exit_code);
void register_bench_command(CLI::App& app);

}  // namespace mithril::cli
