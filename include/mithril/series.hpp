// mithril/series.hpp — a directory holding a sequence of checkpoints as
// keyframes plus deltas against the latest keyframe.
//
// Restoring any member reads at most two files (its keyframe and itself). A
// new keyframe starts when a delta stops paying — its size exceeds
// `keyframe_threshold` times the size the member would have standalone,
// estimated from the current keyframe's ratio — or after `max_deltas`
// deltas in a row.
//
// Layout: DIR/series.json (the manifest, replaced atomically after each
// change) and DIR/step-NNNNNNNNNN.mcp. A crash at any point leaves the
// manifest valid and every listed member restorable; a member file that is
// not in the manifest is an orphan from an interrupted add, replaced by the
// next add of that step. Writers take an exclusive lock on DIR/.lock.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "mithril/checkpoint.hpp"

namespace mithril {

struct SeriesMember {
  std::uint64_t step = 0;
  bool keyframe = true;
  std::optional<std::uint64_t> base_step;  // the keyframe a delta refers to
  std::string file;                        // relative to the series directory
  std::uint64_t source_bytes = 0;
  std::uint64_t stored_bytes = 0;
  std::string source_name;
  std::string blake3;
  std::map<std::string, double> metrics;   // e.g. {"loss": 0.31}, for keep-the-best retention
};

struct SeriesOptions {
  int level = k_default_level;
  unsigned threads = 0;
  unsigned max_deltas = 20;          // deltas after a keyframe before a new one
  double keyframe_threshold = 0.9;   // delta / estimated standalone size
  ProgressCallback progress;
};

// Adds a checkpoint. With no step, uses last step + 1 (or 0). Throws
// Error(exists) if the step is already in the series.
SeriesMember series_add(const std::filesystem::path& dir, const std::filesystem::path& checkpoint,
                        std::optional<std::uint64_t> step, const SeriesOptions& options);

// Members in step order. Throws Error(not_found) if DIR holds no series.
std::vector<SeriesMember> series_list(const std::filesystem::path& dir);

// Restores the member with this step to `output`. The BLAKE3 that series.json
// records for the step must be the one the member's container records (a member
// file replaced by another checkpoint is refused before anything is written);
// with `check_digest` the restored bytes are then hashed and compared with it,
// so the restore is checked end to end against the manifest's copy. Without it
// every chunk's XXH3-64 is still checked (as `mithril decompress --no-check`).
// `progress` as DecompressOptions::progress. Returns what decompress_file()
// returns for the member.
DecompressResult series_restore(const std::filesystem::path& dir, std::uint64_t step,
                                const std::filesystem::path& output, bool force, unsigned threads,
                                bool check_digest = true, ProgressCallback progress = {});

// The manifest's copy of a member's digest against the member's own: throws
// Error(corrupt), naming `location`, `manifest`, `step` and both digests, unless
// the .mcp at `location` (a path or URL) records `expected_blake3` as its
// original's BLAKE3 (a member file replaced by another step's is a valid
// checkpoint with the wrong values). An empty `expected_blake3` (a member
// listed without a digest) is not checked. Returns the member's description
// (describe_file()), so that a caller that goes on to load it need not read
// its index again (a request or two more on object storage).
FileInfo series_check_member(const std::filesystem::path& location, const std::string& expected_blake3,
                         const std::string& manifest, std::uint64_t step);

// The commit point of a member written by the caller (e.g. mithril.save of a
// training state into DIR/FILE): records FILE as member `step`. A delta
// (its .mcp names a base) must give `base_step`, a keyframe of the series
// whose digest is the one the delta names; a keyframe gives none. Sizes and
// digest are read from the file. Throws Error(exists) if the step is listed,
// Error(not_found) if FILE is missing, Error(invalid_argument) if FILE is not
// a plain name or the base does not match.
SeriesMember series_register(const std::filesystem::path& dir, std::uint64_t step, const std::string& file,
                             std::optional<std::uint64_t> base_step, const std::map<std::string, double>& metrics);

// The file name series_add() and series_register() use for a step.
std::string series_member_file(std::uint64_t step);

// Removes the temporaries in `dir` that killed writers on this machine left
// (a member or series.json being written when the process died); live
// writers' and other hosts' temporaries stay (util/stale_temporaries.hpp).
// Returns how many were removed.
std::size_t series_remove_stale_temporaries(const std::filesystem::path& dir);

// Removes these steps (manifest first, then files). Throws
// Error(invalid_argument), removing nothing, if a keyframe that a remaining
// delta needs is among them, Error(not_found) for a step not in the series.
std::vector<SeriesMember> series_remove(const std::filesystem::path& dir, const std::vector<std::uint64_t>& steps);

// Keeps the newest `keep` members (and the keyframes they need); deletes the
// rest. Returns the members removed.
std::vector<SeriesMember> series_prune(const std::filesystem::path& dir, std::size_t keep);

}  // namespace mithril
