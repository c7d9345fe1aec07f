#include "cache/cache_key.hpp"

#include <nlohmann/json.hpp>

#include "mithril/error.hpp"
#include "util/json_number.hpp"

namespace mithril::cache {
namespace {

void put_str(std::string& out, std::string_view s) {
  out += std::to_string(s.size());
  out += ':';
  out += s;
}

}  // namespace

std::string CacheKey::canonical() const {
  std::string out = "mithril-cache-key v1\n";
  out += "graph ";
  put_str(out, graph_hash);
  out += "\ninputs " + std::to_string(inputs.size()) + "\n";
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& in = inputs[i];
    if (in.dtype.empty()) throw Error(Errc::invalid_argument, "cache key: input " + std::to_string(i) + ": empty dtype");
    if (in.layout.empty()) throw Error(Errc::invalid_argument, "cache key: input " + std::to_string(i) + ": empty layout");
    out += "input ";
    put_str(out, in.dtype);
    out += ' ';
    put_str(out, in.layout);
    out += " [";
    for (std::size_t d = 0; d < in.shape.size(); ++d) {
      if (in.shape[d] < -1)
        throw Error(Errc::invalid_argument, "cache key: input " + std::to_string(i) + ": dimension " + std::to_string(in.shape[d]) + " (use -1 for a dynamic one)");
      if (d) out += ',';
      out += std::to_string(in.shape[d]);
    }
    out += "]\n";
  }
  switch (device.granularity) {
    case DeviceGranularity::cpu: out += "device cpu\n"; break;
    case DeviceGranularity::cuda_any: out += "device cuda\n"; break;
    case DeviceGranularity::cuda_cc:
    case DeviceGranularity::cuda_model:
      if (device.value.empty()) throw Error(Errc::invalid_argument, "cache key: device class needs a value");
      out += device.granularity == DeviceGranularity::cuda_cc ? "device cuda-cc " : "device cuda-model ";
      put_str(out, device.value);
      out += '\n';
      break;
  }
  const std::pair<const char*, const std::string*> env_fields[] = {
      {"torch", &env.torch}, {"triton", &env.triton}, {"cuda", &env.cuda}, {"driver", &env.driver}};
  for (const auto& [name, value] : env_fields) {
    out += "env ";
    out += name;
    out += ' ';
    put_str(out, *value);
    out += '\n';
  }
  for (const auto& [k, v] : extra) {  // std::map: sorted, unique
    out += "extra ";
    put_str(out, k);
    out += ' ';
    put_str(out, v);
    out += '\n';
  }
  return out;
}

util::Digest CacheKey::digest() const { return util::blake3(util::as_bytes(canonical())); }

std::string CacheKey::hex() const { return util::to_hex(digest()); }

CacheKey CacheKey::from_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(Errc::invalid_argument, std::string("cache key spec: not JSON: ") + e.what());
  }
  const auto bad = [](const std::string& what) { return Error(Errc::invalid_argument, "cache key spec: " + what); };
  if (!j.is_object()) throw bad("expected an object");
  CacheKey k;
  try {
    k.graph_hash = j.at("graph").get<std::string>();
    for (const auto& ji : j.value("inputs", nlohmann::json::array())) {
      InputSpec in;
      const auto& shape = ji.at("shape");
      if (!shape.is_array()) throw bad("input shape " + shape.dump() + " is not a list");
      for (const auto& d : shape) {
        const auto v = util::json_i64(d);
        if (!v) throw bad("input shape " + shape.dump() + ": " + d.dump() + " is not an integer");
        in.shape.push_back(*v);
      }
      in.dtype = ji.at("dtype").get<std::string>();
      in.layout = ji.value("layout", std::string("strided"));
      k.inputs.push_back(std::move(in));
    }
    const auto dev = j.value("device", std::string("cpu"));
    if (dev == "cpu") k.device = {DeviceGranularity::cpu, ""};
    else if (dev == "cuda") k.device = {DeviceGranularity::cuda_any, ""};
    else if (dev.rfind("cuda-cc:", 0) == 0) k.device = {DeviceGranularity::cuda_cc, dev.substr(8)};
    else if (dev.rfind("cuda-model:", 0) == 0) k.device = {DeviceGranularity::cuda_model, dev.substr(11)};
    else throw bad("device '" + dev + "': expected cpu, cuda, cuda-cc:X.Y or cuda-model:NAME");
    if (j.contains("env")) {
      const auto& e = j["env"];
      k.env.torch = e.value("torch", std::string());
      k.env.triton = e.value("triton", std::string());
      k.env.cuda = e.value("cuda", std::string());
      k.env.driver = e.value("driver", std::string());
    }
    if (j.contains("extra")) k.extra = j["extra"].get<std::map<std::string, std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw bad(e.what());
  }
  k.canonical();  // validates
  return k;
}

}  // namespace mithril::cache
