// mithril/convert.hpp — conversion between torch.save files and safetensors.
//
// torch.save -> safetensors: the file is read with the restricted unpickler
// (nothing in it is executed; see describe_file). Nested dicts, lists and
// tuples are flattened to dotted names ("optimizer.state.3.exp_avg"); a bare
// tensor saved on its own is named "tensor". Tensors that share a storage
// (tied weights, views, slices) are COPIED: each name gets its own bytes,
// exactly its view's elements in row-major order, so every tensor loads equal
// to what torch.load returns. Lazy conjugate/negative bits are applied and
// big-endian archives are swapped to little-endian. Non-tensor values (epoch,
// learning rate, ...) cannot go into safetensors and are reported as dropped.
//
// safetensors -> torch.save: a flat state_dict (OrderedDict of the same
// names), one storage per tensor, that torch.load(weights_only=True) opens;
// the safetensors __metadata__ is reported as dropped.
//
// Either way the output is written atomically and an existing output is
// refused unless `force`. Errors: Error(unsupported) for a dtype the target
// cannot hold or an input of another kind, Error(invalid_argument) for name
// collisions, plus everything the readers throw.
//
// Thread-safety: reentrant.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace mithril {

enum class ConvertFormat { automatic, safetensors, torch };

struct ConvertOptions {
  // Output format; automatic picks by extension: .safetensors -> safetensors,
  // .pt .pth .bin .ckpt -> torch. Anything else needs an explicit choice.
  ConvertFormat to = ConvertFormat::automatic;
  bool force = false;  // overwrite an existing output
  // Called with human-readable notes (copied views, dropped values). Optional.
  std::function<void(const std::string&)> note;
};

struct ConvertResult {
  std::string from;  // "torch" or "safetensors"
  std::string to;
  std::size_t tensors = 0;
  std::size_t shared_copies = 0;     // tensors written as copies of a storage another tensor also views
  std::size_t dropped_values = 0;    // non-tensor values / metadata entries not carried over
  std::uint64_t output_bytes = 0;
  double seconds = 0;
};

ConvertResult convert_file(const std::filesystem::path& input, const std::filesystem::path& output,
                           const ConvertOptions& options);

}  // namespace mithril
