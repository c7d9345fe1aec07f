// mithril/torch_object.hpp — whole torch.save objects (nested dicts, lists,
// optimizer state, shared storages, views) straight from and into memory.
//
// compress_torch_object() writes an .mcp whose source is the torch.save
// archive (zip format, as torch 2.x lays it out, formats/torch_writer.hpp)
// made of a data.pkl and the storages it names, without ever writing that
// archive: storage chunks are coded from the caller's buffers. The pickle is
// read back through the restricted unpickler first, so nothing is written
// that the reader (and torch.load(weights_only=True)) would refuse.
//
// TorchObjectReader opens an .mcp of a torch.save file, or a plain torch.save
// file, and returns the pickled object as a value tree (read by the
// restricted unpickler: nothing is imported, called or evaluated) plus the
// storages, each decoded on request straight into caller memory.
//
// Errors: every function throws mithril::Error (error.hpp) with context.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mithril/checkpoint.hpp"
#include "mithril/tensors.hpp"

namespace mithril {

// A storage in caller memory, named by its persistent-id key in the pickle.
struct StorageData {
  std::string key;                  // "0", "1", ...: the record is archive/data/<key>
  std::span<const std::byte> data;  // all the storage's bytes
};

// Writes `output` (.mcp, source kind "torch") from a protocol 2..5 pickle
// whose persistent ids are ('storage', <class>, key, location, numel), as
// torch.save writes them, and the storages it names. The buffers are read
// while the call runs and must not change meanwhile. The source is named
// after `output` ("m.mcp" -> "m.pt"). Output equals compress_file() of the
// equivalent torch.save file at the same options. Throws
// Error(unsupported) naming the global or opcode the restricted unpickler
// refuses, Error(invalid_argument) for a storage the pickle does not name (or
// the reverse) or whose size disagrees, Error(exists) when output exists and
// !options.force.
CompressResult compress_torch_object(std::span<const std::byte> pickle, const std::vector<StorageData>& storages,
                                     const std::filesystem::path& output, const CompressOptions& options);

// One node of the pickled object (mirrors formats/pickle.hpp's PickleNode).
struct ObjectNode {
  std::string kind;  // none boolean integer big_integer floating complex string bytes list tuple
                     // set dict ordered_dict global dtype size device storage tensor
  std::int64_t integer = 0;
  double real = 0;
  double imag = 0;
  std::string text;  // string (UTF-8), bytes, big_integer (little-endian two's complement),
                     // global ("module.name"), dtype ("float32"), device ("cuda:0")
  std::vector<std::uint32_t> items;  // children; dicts: key, value, key, value, ...
  std::uint32_t state = 0xFFFFFFFF;  // BUILD state (ordered_dict: a state_dict's _metadata)
  std::uint32_t index = 0;           // storage / tensor index
};

struct ObjectStorage {
  std::string key;
  std::string location;     // "cpu", "cuda:0", ...
  std::uint64_t bytes = 0;  // size of the storage
};

struct ObjectTensor {
  std::uint32_t storage = 0;  // index into storages()
  std::string dtype;          // torch name: "float32", "bfloat16", ...
  std::uint64_t storage_offset = 0;  // elements
  std::vector<std::uint64_t> shape;
  std::vector<std::uint64_t> stride;  // elements
  bool requires_grad = false;
  bool is_parameter = false;
  bool conj = false;
  bool neg = false;
};

// Thread-safety: immutable after construction; read_storages() may be called
// from several threads at once.
class TorchObjectReader {
 public:
  // Opens an .mcp whose source is a torch.save file, or a torch.save (zip)
  // file. Throws Error(unsupported) for another kind of source (naming it),
  // a big-endian archive, a legacy (torch < 1.6) file, or whatever the
  // restricted unpickler refuses; Error(corrupt) for damage;
  // Error(invalid_argument) for a delta without its base.
  explicit TorchObjectReader(const std::filesystem::path& path, const ReaderOptions& options = {});
  ~TorchObjectReader();
  TorchObjectReader(TorchObjectReader&&) noexcept;
  TorchObjectReader& operator=(TorchObjectReader&&) noexcept;

  const std::filesystem::path& path() const noexcept;
  bool is_mcp() const noexcept;
  std::uint32_t root() const noexcept;
  const std::vector<ObjectNode>& nodes() const noexcept;
  const std::vector<ObjectStorage>& storages() const noexcept;
  const std::vector<ObjectTensor>& tensors() const noexcept;
  // Plain torch.save files: where storage i's bytes start in the file (for
  // memory-mapping); empty for an .mcp.
  const std::vector<std::uint64_t>& file_offsets() const noexcept;

  struct Target {
    std::size_t storage = 0;
    std::span<std::byte> out;  // exactly storages()[storage].bytes
  };
  // Decodes the storages, all chunks in parallel, checking every chunk's
  // checksum. `progress` (optional) gets (bytes done, bytes total) from one
  // thread at a time. Throws Error(invalid_argument) for a bad index or size,
  // Error(corrupt) naming the chunk on damage.
  void read_storages(std::span<const Target> targets, const ProgressCallback& progress = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

}  // namespace mithril
