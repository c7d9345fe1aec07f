// cli/cmd_series.cpp — mithril series add/list/restore/prune.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "mithril/series.hpp"

namespace mithril::cli {

void register_series_commands(CLI::App& app, const GlobalOptions& global, int&) {
  auto* series = app.add_subcommand("series", "A directory of checkpoints kept as keyframes plus deltas");
  series->require_subcommand(1);

  struct AddArgs {
    std::string dir, checkpoint;
    std::optional<std::uint64_t> step;
    SeriesOptions options;
  };
  auto a = std::make_shared<AddArgs>();
  auto* add = series->add_subcommand("add", "Add a checkpoint to the series");
  add->add_option("dir", a->dir, "Series directory (created if missing)")->required();
  add->add_option("checkpoint", a->checkpoint, "Checkpoint file")->required();
  add->add_option("--step", a->step, "Training step (default: last + 1)");
  add->add_option("-l,--level", a->options.level, "Level 1..19")->check(CLI::Range(1, 19));
  add->add_option("-T,--threads", a->options.threads, "Worker threads (default: all cores)");
  add->add_option("--max-deltas", a->options.max_deltas, "Deltas after a keyframe before a new keyframe (default 20)");
  add->add_option("--keyframe-threshold", a->options.keyframe_threshold,
                  "Start a keyframe when delta size > this x standalone estimate (default 0.9)");
  add->callback([a, &global] {
    ProgressBar bar("series add", !global.quiet);
    a->options.progress = [&](std::uint64_t d, std::uint64_t t) { bar.update(d, t); };
    const auto m = series_add(a->dir, a->checkpoint, a->step, a->options);
    bar.finish();
    if (!global.quiet)
      fmt::print("{}: step {} added as {} ({} -> {}, ratio {:.3f}){}\n", a->dir, m.step,
                 m.keyframe ? "keyframe" : "delta", format_bytes(m.source_bytes), format_bytes(m.stored_bytes),
                 m.stored_bytes ? static_cast<double>(m.source_bytes) / m.stored_bytes : 0.0,
                 m.base_step ? fmt::format(" against step {}", *m.base_step) : "");
  });

  auto list_dir = std::make_shared<std::pair<std::string, bool>>();
  auto* list = series->add_subcommand("list", "List members: step, kind, size, ratio");
  list->add_option("dir", list_dir->first, "Series directory")->required();
  list->add_flag("--json", list_dir->second, "Machine-readable output");
  list->callback([list_dir] {
    const auto members = series_list(list_dir->first);
    if (list_dir->second) {
      nlohmann::ordered_json j;
      j["dir"] = list_dir->first;
      j["members"] = nlohmann::ordered_json::array();
      for (const auto& m : members) {
        nlohmann::ordered_json e;
        e["step"] = m.step;
        e["kind"] = m.keyframe ? "keyframe" : "delta";
        e["base_step"] = m.base_step ? nlohmann::ordered_json(*m.base_step) : nlohmann::ordered_json(nullptr);
        e["file"] = m.file;
        e["source_name"] = m.source_name;
        e["source_bytes"] = m.source_bytes;
        e["stored_bytes"] = m.stored_bytes;
        e["ratio"] = m.stored_bytes ? static_cast<double>(m.source_bytes) / m.stored_bytes : 0.0;
        e["blake3"] = m.blake3;
        if (!m.metrics.empty()) e["metrics"] = m.metrics;
        j["members"].push_back(std::move(e));
      }
      print_json(j, 1);
      return;
    }
    fmt::print("{:>12}  {:<8} {:>10} {:>14} {:>14} {:>8}  {}\n", "step", "kind", "base", "original", "stored",
               "ratio", "file");
    std::uint64_t orig = 0, stored = 0;
    for (const auto& m : members) {
      orig += m.source_bytes;
      stored += m.stored_bytes;
      fmt::print("{:>12}  {:<8} {:>10} {:>14} {:>14} {:>8.3f}  {}\n", m.step, m.keyframe ? "keyframe" : "delta",
                 m.base_step ? std::to_string(*m.base_step) : "-", m.source_bytes, m.stored_bytes,
                 m.stored_bytes ? static_cast<double>(m.source_bytes) / m.stored_bytes : 0.0, m.file);
    }
    fmt::print("{} members, {} -> {} (ratio {:.3f})\n", members.size(), format_bytes(orig), format_bytes(stored),
               stored ? static_cast<double>(orig) / stored : 0.0);
  });

  struct RestoreArgs {
    std::string dir, output;
    std::uint64_t step = 0;
    bool force = false, no_check = false;
    unsigned threads = 0;
  };
  auto r = std::make_shared<RestoreArgs>();
  auto* restore = series->add_subcommand("restore", "Restore the checkpoint of one step");
  restore->add_option("dir", r->dir, "Series directory")->required();
  restore->add_option("step", r->step, "Step to restore")->required();
  restore->add_option("-o,--output", r->output, "Output file")->required();
  restore->add_flag("-f,--force", r->force, "Overwrite an existing output");
  restore->add_option("-T,--threads", r->threads, "Worker threads (default: all cores)");
  restore->add_flag("--no-check,--no-digest", r->no_check,
                    "Skip recomputing the whole-file BLAKE3; every chunk's XXH3-64 is still checked (as "
                    "decompress --no-check)");
  restore->callback([r, &global] {
    ProgressBar bar("series restore", !global.quiet);
    const auto res = series_restore(r->dir, r->step, r->output, r->force, r->threads, !r->no_check,
                                    [&](std::uint64_t d, std::uint64_t t) { bar.update(d, t); });
    bar.finish();
    if (!global.quiet)
      fmt::print(stderr, "{}: step {}: {} -> {} in {:.2f} s, {:.0f} MiB/s -> {}\n", r->dir, r->step,
                 format_bytes(res.input_bytes), format_bytes(res.output_bytes), res.seconds,
                 mib_per_s(res.output_bytes, res.seconds), r->output);
  });

  struct PruneArgs {
    std::string dir;
    std::size_t keep = 0;
  };
  auto p = std::make_shared<PruneArgs>();
  auto* prune = series->add_subcommand("prune", "Keep the newest N members and the keyframes they need");
  prune->add_option("dir", p->dir, "Series directory")->required();
  prune->add_option("--keep", p->keep, "Members to keep")->required();
  prune->callback([p, &global] {
    const auto removed = series_prune(p->dir, p->keep);
    if (!global.quiet) {
      fmt::print("{}: removed {} member{}", p->dir, removed.size(), removed.size() == 1 ? "" : "s");
      for (const auto& m : removed) fmt::print(" {}", m.step);
      fmt::print("\n");
    }
  });
}

}  // namespace mithril::cli
