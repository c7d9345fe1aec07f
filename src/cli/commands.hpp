// cli/commands.hpp — each command group registers its subcommands here.
// The CLI uses only the public API (include/mithril/).
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

// A command's JSON output: paths on Linux are any bytes, so text that is not
// UTF-8 (a file name) is printed with U+FFFD rather than failing the command.
inline void print_json(const nlohmann::json& j, int indent) {
  fmt::print("{}\n", j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace));
}

}  // namespace mithril::cli
