// formats/torch_writer.hpp — writes torch.save files (zip format) that
// torch.load(weights_only=True) opens: a flat state_dict, one storage per
// tensor, laid out as torch 2.x lays it out (see torch_checkpoint.hpp):
//
//   archive/data.pkl            protocol-2 pickle of an OrderedDict
//                               {name: _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())}
//                               (_rebuild_tensor_v3 with an UntypedStorage for dtypes
//                               without a legacy storage class: uint16, float8_*, ...)
//   archive/.format_version     "1"
//   archive/.storage_alignment  "64"
//   archive/byteorder           "little"
//   archive/data/<i>            the bytes of tensor i, 64-byte aligned, STORED
//   archive/version             "3\n"
//
// The pickle only names globals that torch's weights_only unpickler allows.
// Output is deterministic: same tensors, same bytes.
//
// Thread-safety: free functions, reentrant.
#pragma once

#include <filesystem>
#include <functional>
#include <vector>

#include "formats/safetensors.hpp"
#include "formats/zip_writer.hpp"
#include "util/atomic_file.hpp"
#include "util/bytes.hpp"

namespace mithril::formats {

// The data.pkl of a state_dict holding `tensors` in this order, storage i
// being tensor i. Throws Error(unsupported) for a dtype torch cannot hold
// (F6_*, packed F4), Error(invalid_argument) for a name that is not UTF-8 or
// data of the wrong size.
util::ByteVector torch_state_dict_pickle(const std::vector<TensorView>& tensors);

// Writes the whole archive to `sink`. Throws as torch_state_dict_pickle does,
// and Error(invalid_argument) for duplicate names.
void write_torch_checkpoint(const std::vector<TensorView>& tensors, const ZipWriter::Sink& sink);

// Same, into a file that appears only when complete (Error(exists) per
// `overwrite`); `before_commit` as write_safetensors's.
void write_torch_checkpoint(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                            util::Overwrite overwrite, const std::function<void()>& before_commit = {});

}  // namespace mithril::formats
