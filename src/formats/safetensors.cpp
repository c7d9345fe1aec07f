#include "formats/safetensors.hpp"

#include <algorithm>
#include <array>
#include <numeric>
#include <string>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/json_number.hpp"
#include "util/json_text.hpp"

// Behaviour mirrors huggingface/safetensors 0.8 (safetensors/src/tensor.rs:
// SafeTensors::read_metadata, Metadata::validate, prepare) except where noted
// "stricter": there this reader refuses files the reference accepts, because
// they are ambiguous (duplicate keys) or break the published format spec.

namespace mithril::formats {

namespace {

using Json = nlohmann::json;
using util::append_json_string;
using util::invalid_utf8_at;

constexpr std::size_t k_length_bytes = 8;
// serde_json refuses JSON nested 128 containers deep (its recursion limit);
// 127 still parses. Matching it keeps "the reference would refuse" files out
// and bounds the depth of the DOM we build.
constexpr std::size_t k_max_nesting = 127;
// A name can be as long as the header; error messages show a prefix.
constexpr std::size_t k_max_name_in_message = 200;

// Quotes untrusted text for an error message: control bytes and quotes
// escaped, long names cut.
std::string printable(std::string_view s) {
  static constexpr char k_hex[] = "0123456789abcdef";
  std::string out;
  const bool cut = s.size() > k_max_name_in_message;
  if (cut) s = s.substr(0, k_max_name_in_message);
  out.reserve(s.size() + 2);
  out += '\'';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += k_hex[c >> 4];
      out += k_hex[c & 15];
    } else {
      out += ch;
    }
  }
  out += cut ? "'..." : "'";
  return out;
}

std::string shape_text(const std::vector<std::uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

[[noreturn]] void header_error(std::string_view file, std::string_view what) {
  throw Error(Errc::corrupt, fmt::format("{}: header: {}", file, what));
}

[[noreturn]] void tensor_error(std::string_view file, std::string_view name, std::string_view what) {
  throw Error(Errc::corrupt, fmt::format("{}: tensor {}: {}", file, printable(name), what));
}

enum class SizeStatus { ok, count_overflow, bits_overflow, partial_byte };

struct ByteSize {
  SizeStatus status = SizeStatus::ok;
  std::uint64_t count = 0;  // elements (valid unless count_overflow)
  std::uint64_t bytes = 0;  // valid when ok
};

// Element count folded left to right with overflow checks, then bits, then
// bytes: the reference's exact order, so that e.g. [2^32, 2^32, 0]
// overflows while [0, 2^32, 2^32] is a valid empty tensor.
ByteSize byte_size(DType dtype, const std::vector<std::uint64_t>& shape) noexcept {
  ByteSize r;
  std::uint64_t count = 1;
  for (auto d : shape) {
    if (__builtin_mul_overflow(count, d, &count)) {
      r.status = SizeStatus::count_overflow;
      return r;
    }
  }
  r.count = count;
  std::uint64_t bits = 0;
  if (__builtin_mul_overflow(count, std::uint64_t{dtype_info(dtype).bits}, &bits)) {
    r.status = SizeStatus::bits_overflow;
  } else if (bits % 8 != 0) {
    r.status = SizeStatus::partial_byte;
  } else {
    r.bytes = bits / 8;
  }
  return r;
}

std::string_view json_type(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_integer: return "a negative integer";
    case Json::value_t::number_unsigned: return "an integer";
    case Json::value_t::number_float: return "a non-integer number";
    case Json::value_t::binary: return "binary";
    case Json::value_t::discarded: return "nothing";
  }
  return "unknown";
}

// Builds the header's DOM from SAX events, refusing duplicate keys where
// keys mean something (the top level, tensor entries, __metadata__) and
// nesting the reference would refuse. nlohmann keeps the last of duplicate
// keys and serde_json does the same for tensor names, so a duplicate would
// let two readers see different tensors: refused (stricter than the
// reference, as the format README asks: "Duplicate keys are disallowed").
// (nlohmann's own callback parser cannot be used: it rescans the parent
// object after every child object, quadratic in the number of tensors.)
class HeaderBuilder final : public nlohmann::json_sax<Json> {
 public:
  explicit HeaderBuilder(std::string_view file) : m_file(file) {}

  Json& root() { return m_root; }

  bool null() override { return add(Json(nullptr)) != nullptr; }
  bool boolean(bool v) override { return add(Json(v)) != nullptr; }
  bool number_integer(number_integer_t v) override { return add(Json(v)) != nullptr; }
  bool number_unsigned(number_unsigned_t v) override { return add(Json(v)) != nullptr; }
  bool number_float(number_float_t v, const string_t&) override { return add(Json(v)) != nullptr; }
  bool string(string_t& v) override { return add(Json(std::move(v))) != nullptr; }
  bool binary(binary_t&) override { return false; }  // JSON text has none

  bool start_object(std::size_t) override { return open(Json::object()); }
  bool start_array(std::size_t) override { return open(Json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    const std::size_t depth = m_open.size();  // 1: a top-level key
    if (depth == 1) m_entry = k;
    if (depth <= 2 && m_open.back()->contains(k)) {
      if (depth == 1 && k == "__metadata__") header_error(m_file, "duplicate key '__metadata__'");
      if (depth == 1) tensor_error(m_file, k, "duplicate name (the header lists it twice)");
      if (m_entry == "__metadata__") header_error(m_file, fmt::format("__metadata__: duplicate key {}", printable(k)));
      tensor_error(m_file, m_entry, fmt::format("duplicate field {}", printable(k)));
    }
    m_key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    // what() is "[json.exception.parse_error.101] parse error at ...".
    std::string_view what = e.what();
    if (const auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
    header_error(m_file, fmt::format("invalid JSON: {}", what));
  }

 private:
  // Places a value in the innermost open container; returns where it landed.
  // Pointers to open containers stay valid: only the innermost one grows.
  Json* add(Json&& v) {
    if (m_open.empty()) {
      m_root = std::move(v);
      return &m_root;
    }
    Json& parent = *m_open.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    return &(parent[m_key] = std::move(v));  // a repeated ignored key: last wins
  }

  bool open(Json&& container) {
    if (m_open.size() + 1 > k_max_nesting) {
      header_error(m_file, fmt::format("invalid JSON: nested deeper than {} levels (the reference parser's "
                                       "recursion limit)",
                                       k_max_nesting));
    }
    m_open.push_back(add(std::move(container)));
    return true;
  }

  bool close() {
    m_open.pop_back();
    return true;
  }

  std::string_view m_file;
  Json m_root;
  std::vector<Json*> m_open;  // open containers, outermost first
  std::string m_key;          // key of the next value in the innermost object
  std::string m_entry;        // current top-level key, for messages
};

Json parse_header_json(std::string_view text, std::string_view file) {
  HeaderBuilder builder(file);
  if (!Json::sax_parse(text.begin(), text.end(), &builder)) header_error(file, "invalid JSON");
  return std::move(builder.root());
}

std::map<std::string, std::string> parse_metadata(const Json& value, std::string_view file) {
  std::map<std::string, std::string> out;
  if (value.is_null()) return out;  // serde reads null as "no metadata"
  if (!value.is_object()) {
    header_error(file, fmt::format("__metadata__ must be an object of strings, found {}", json_type(value)));
  }
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) {
      header_error(file, fmt::format("__metadata__ {}: value must be a string, found {}", printable(key),
                                     json_type(v)));
    }
    out.emplace(key, v.get<std::string>());
  }
  return out;
}

std::uint64_t unsigned_field(const Json& v, std::string_view file, std::string_view name,
                             std::string_view field) {
  const auto u = util::json_u64(v);
  if (!u) {
    tensor_error(file, name,
                 fmt::format("field '{}' must hold non-negative integers, found {}", field, json_type(v)));
  }
  return *u;
}

TensorInfo parse_entry(const std::string& name, const Json& value, std::string_view file) {
  const Json* dtype = nullptr;
  const Json* shape = nullptr;
  const Json* offsets = nullptr;
  if (value.is_object()) {
    // Other fields are ignored, as serde ignores unknown struct fields.
    auto field = [&](const char* key) {
      const auto it = value.find(key);
      if (it == value.end()) tensor_error(file, name, fmt::format("missing field '{}'", key));
      return &*it;
    };
    dtype = field("dtype");
    shape = field("shape");
    offsets = field("data_offsets");
  } else if (value.is_array() && value.size() == 3) {
    // serde also reads a struct from a sequence of its fields in order.
    dtype = &value[0];
    shape = &value[1];
    offsets = &value[2];
  } else {
    tensor_error(file, name,
                 fmt::format("entry must be an object {{dtype, shape, data_offsets}}, found {}{}", json_type(value),
                             value.is_array() ? fmt::format(" of {} elements", value.size()) : ""));
  }

  TensorInfo t;
  t.name = name;
  if (!dtype->is_string()) {
    tensor_error(file, name, fmt::format("field 'dtype' must be a string, found {}", json_type(*dtype)));
  }
  const auto& dtype_name = dtype->get_ref<const std::string&>();
  const auto parsed = parse_dtype(dtype_name);
  if (!parsed) tensor_error(file, name, fmt::format("unknown dtype {}", printable(dtype_name)));
  t.dtype = *parsed;

  if (!shape->is_array()) {
    tensor_error(file, name, fmt::format("field 'shape' must be an array, found {}", json_type(*shape)));
  }
  t.shape.reserve(shape->size());
  for (const auto& d : *shape) t.shape.push_back(unsigned_field(d, file, name, "shape"));

  if (!offsets->is_array() || offsets->size() != 2) {
    tensor_error(file, name,
                 fmt::format("field 'data_offsets' must be an array [begin, end], found {}{}", json_type(*offsets),
                             offsets->is_array() ? fmt::format(" of {} elements", offsets->size()) : ""));
  }
  t.begin = unsigned_field((*offsets)[0], file, name, "data_offsets");
  t.end = unsigned_field((*offsets)[1], file, name, "data_offsets");
  return t;
}

// Metadata::validate: in offset order, each tensor starts where the previous
// one ended (the first at 0) and spans exactly its shape's bytes. Returns
// the end of the last tensor.
std::uint64_t validate_layout(const std::vector<TensorInfo>& tensors, std::string_view file) {
  std::uint64_t expected_begin = 0;
  for (const auto& t : tensors) {
    const auto offsets = fmt::format("[{}, {}]", t.begin, t.end);
    if (t.end < t.begin) tensor_error(file, t.name, fmt::format("invalid offsets {}: end is before begin", offsets));
    if (t.begin != expected_begin) {
      tensor_error(file, t.name,
                   fmt::format("invalid offsets {}: expected begin {} ({}; tensors must tile the data region "
                               "from offset 0)",
                               offsets, expected_begin, t.begin > expected_begin ? "a hole" : "an overlap"));
    }
    expected_begin = t.end;
    const auto size = byte_size(t.dtype, t.shape);
    const auto dtype_name = dtype_info(t.dtype).name;
    switch (size.status) {
      case SizeStatus::count_overflow:
        tensor_error(file, t.name,
                     fmt::format("size overflow: the element count of shape {} does not fit in 64 bits",
                                 shape_text(t.shape)));
      case SizeStatus::bits_overflow:
        tensor_error(file, t.name,
                     fmt::format("size overflow: {} elements of {} do not fit in 2^64 bits", size.count, dtype_name));
      case SizeStatus::partial_byte:
        tensor_error(file, t.name,
                     fmt::format("size is not a whole number of bytes: {} {} elements of {} bits", size.count,
                                 dtype_name, dtype_info(t.dtype).bits));
      case SizeStatus::ok:
        break;
    }
    if (t.size() != size.bytes) {
      tensor_error(file, t.name,
                   fmt::format("size mismatch: data_offsets {} hold {} bytes but shape {} of {} needs {}", offsets,
                               t.size(), shape_text(t.shape), dtype_name, size.bytes));
    }
  }
  return expected_begin;
}

// Position of a dtype in safetensors' `Dtype` enum; the reference writer
// orders tensors by it, descending (nominally "alignment", but C64 sits
// between F32 and F64 and F4 after BOOL, so use the enum order itself).
int reference_rank(DType t) noexcept {
  switch (t) {
    case DType::BOOL: return 0;
    case DType::F4: return 1;
    case DType::F6_E2M3: return 2;
    case DType::F6_E3M2: return 3;
    case DType::U8: return 4;
    case DType::I8: return 5;
    case DType::F8_E5M2: return 6;
    case DType::F8_E4M3: return 7;
    case DType::F8_E8M0: return 8;
    case DType::F8_E4M3FNUZ: return 9;
    case DType::F8_E5M2FNUZ: return 10;
    case DType::I16: return 11;
    case DType::U16: return 12;
    case DType::F16: return 13;
    case DType::BF16: return 14;
    case DType::I32: return 15;
    case DType::U32: return 16;
    case DType::F32: return 17;
    case DType::C64: return 18;
    case DType::F64: return 19;
    case DType::I64: return 20;
    case DType::U64: return 21;
  }
  return -1;
}

[[noreturn]] void argument_error(std::string_view context, std::string_view what) {
  throw Error(Errc::invalid_argument, fmt::format("{}: {}", context, what));
}

util::ByteVector build_header(const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              std::vector<std::size_t>& order, std::string_view context) {
  std::unordered_set<std::string_view> names;
  std::vector<std::uint64_t> sizes(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const auto fail = [&](std::string_view what) {
      argument_error(context, fmt::format("tensor {}: {}", printable(t.name), what));
    };
    if (invalid_utf8_at(t.name) != std::string_view::npos) fail("name is not valid UTF-8");
    if (t.name == "__metadata__") fail("name is reserved for the metadata map");
    if (!names.insert(t.name).second) fail("duplicate name");
    const auto size = byte_size(t.dtype, t.shape);
    const auto dtype_name = dtype_info(t.dtype).name;
    if (size.status == SizeStatus::count_overflow || size.status == SizeStatus::bits_overflow) {
      fail(fmt::format("size of shape {} of {} overflows 64 bits", shape_text(t.shape), dtype_name));
    }
    if (size.status == SizeStatus::partial_byte) {
      fail(fmt::format("{} {} elements are not a whole number of bytes", size.count, dtype_name));
    }
    if (t.data.size() != size.bytes) {
      fail(fmt::format("data is {} bytes but shape {} of {} needs {}", t.data.size(), shape_text(t.shape),
                       dtype_name, size.bytes));
    }
    sizes[i] = size.bytes;
  }
  for (const auto& [key, value] : metadata) {
    if (invalid_utf8_at(key) != std::string_view::npos || invalid_utf8_at(value) != std::string_view::npos) {
      argument_error(context, fmt::format("metadata {}: key and value must be valid UTF-8", printable(key)));
    }
  }

  order.resize(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const int ra = reference_rank(tensors[a].dtype), rb = reference_rank(tensors[b].dtype);
    if (ra != rb) return ra > rb;
    return tensors[a].name < tensors[b].name;  // bytewise, like Rust's str Ord
  });

  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) json += ',';
      first = false;
      append_json_string(json, key);
      json += ':';
      append_json_string(json, value);
    }
    json += '}';
  }
  std::uint64_t offset = 0;
  for (const auto i : order) {
    const auto& t = tensors[i];
    if (json.size() > 1) json += ',';
    append_json_string(json, t.name);
    json += ":{\"dtype\":\"";
    json += dtype_info(t.dtype).name;
    json += "\",\"shape\":[";
    json += fmt::format("{}", fmt::join(t.shape, ","));
    std::uint64_t end = 0;
    if (__builtin_add_overflow(offset, sizes[i], &end)) argument_error(context, "total data size overflows 64 bits");
    json += fmt::format("],\"data_offsets\":[{},{}]}}", offset, end);
    offset = end;
  }
  json += '}';
  json.append((k_length_bytes - json.size() % k_length_bytes) % k_length_bytes, ' ');
  if (json.size() > k_safetensors_max_header) {
    argument_error(context, fmt::format("header of {} bytes exceeds the limit of {}", json.size(),
                                        k_safetensors_max_header));
  }

  util::ByteVector out;
  out.reserve(k_length_bytes + json.size());
  util::append_le<std::uint64_t>(out, json.size());
  util::append_bytes(out, util::as_bytes(json));
  return out;
}

}  // namespace

SafetensorsHeader parse_safetensors(util::ByteSpan file, std::string_view file_name) {
  if (file.size() < k_length_bytes) {
    header_error(file_name, fmt::format("file too small: {} bytes, the header length alone needs 8", file.size()));
  }
  const auto n = util::load_le<std::uint64_t>(file.data());
  if (n > k_safetensors_max_header) {
    header_error(file_name, fmt::format("header too large: N = {} exceeds the limit of {} bytes", n,
                                        k_safetensors_max_header));
  }
  if (n > file.size() - k_length_bytes) {
    header_error(file_name, fmt::format("invalid header length: N = {} runs past the end of the {}-byte file", n,
                                        file.size()));
  }
  const auto text = util::as_chars(file.subspan(k_length_bytes, n));
  if (const auto bad = invalid_utf8_at(text); bad != std::string_view::npos) {
    header_error(file_name, fmt::format("not valid UTF-8 (byte {} of the header)", bad));
  }
  // The spec says the header MUST begin with '{'; the reference has the check
  // written but disabled and accepts leading whitespace (stricter here).
  if (text.empty() || text.front() != '{') {
    header_error(file_name, text.empty() ? std::string("must start with '{' (the header is empty)")
                                         : fmt::format("must start with '{{' (found {})", printable(text.substr(0, 1))));
  }

  // JSON allows no raw NUL anywhere, but nlohmann's lexer takes one for the
  // end of input and would accept "{}\0garbage".
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    header_error(file_name, fmt::format("invalid JSON: NUL byte at byte {} of the header", nul));
  }
  const Json root = parse_header_json(text, file_name);
  SafetensorsHeader out;
  out.header_size = n;
  out.data_offset = k_length_bytes + n;
  out.tensors.reserve(root.size());
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      out.metadata = parse_metadata(value, file_name);
    } else {
      out.tensors.push_back(parse_entry(key, value, file_name));
    }
  }
  // The reference sorts by (begin, end); the name breaks ties between empty
  // tensors so that the order never depends on the header's key order.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });

  const std::uint64_t covered = validate_layout(out.tensors, file_name);
  const std::uint64_t available = file.size() - out.data_offset;
  if (covered != available) {
    header_error(file_name, fmt::format("incomplete data: the tensors cover {} bytes but {} follow the header "
                                        "(the data region must be covered exactly)",
                                        covered, available));
  }
  return out;
}

bool looks_like_safetensors(util::ByteSpan file) noexcept {
  if (file.size() < k_length_bytes + 2) return false;  // "{}" is the smallest header
  const auto n = util::load_le<std::uint64_t>(file.data());
  return n >= 2 && n <= k_safetensors_max_header && n <= file.size() - k_length_bytes &&
         file[k_length_bytes] == std::byte{'{'};
}

std::string safetensors_sniff_failure(util::ByteSpan file) {
  if (looks_like_safetensors(file)) return {};
  if (file.size() < k_length_bytes + 2)
    return fmt::format("{} bytes, too short for a header length and a header", file.size());
  const auto n = util::load_le<std::uint64_t>(file.data());
  if (n < 2) return fmt::format("the header length field says {} bytes", n);
  if (n > k_safetensors_max_header)
    return fmt::format("the header length field says {} bytes, over the format's limit of {}", n,
                       k_safetensors_max_header);
  if (n > file.size() - k_length_bytes)
    return fmt::format("the header length field says {} bytes, past the end of the {}-byte file: truncated?", n,
                       file.size());
  return "the header does not start with '{'";
}

util::ByteVector build_safetensors_header(const std::vector<TensorView>& tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          std::vector<std::size_t>* order) {
  std::vector<std::size_t> local;
  return build_header(tensors, metadata, order ? *order : local, "safetensors header");
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata, util::Overwrite overwrite,
                       const std::function<void()>& before_commit) {
  std::vector<std::size_t> order;
  const auto header = build_header(tensors, metadata, order, path.string());
  util::AtomicFile out(path, overwrite);
  out.write(header);
  for (const auto i : order) {
    if (!tensors[i].data.empty()) out.write(tensors[i].data);
  }
  if (before_commit) before_commit();
  out.commit();
}

}  // namespace mithril::formats
