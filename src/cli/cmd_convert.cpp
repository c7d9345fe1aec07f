// cli/cmd_convert.cpp — convert between torch.save and safetensors.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/core.h>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "mithril/convert.hpp"
#include "mithril/error.hpp"

namespace mithril::cli {
namespace {

struct ConvertArgs {
  std::string input, output, to;
  bool force = false;
};

void run_convert(const ConvertArgs& a, const GlobalOptions& g) {
  ConvertOptions o;
  o.force = a.force;
  if (a.to == "safetensors")
    o.to = ConvertFormat::safetensors;
  else if (a.to == "torch" || a.to == "pt")
    o.to = ConvertFormat::torch;
  else if (!a.to.empty())
    throw Error(Errc::invalid_argument, fmt::format("--to expects safetensors or torch, got '{}'", a.to));
  o.note = [&](const std::string& n) {
    if (!g.quiet) fmt::print(stderr, "mithril: note: {}\n", n);
  };
  const auto r = convert_file(a.input, a.output, o);
  if (!g.quiet)
    fmt::print(stderr, "{}: {} -> {}, {} tensors, {} in {:.2f} s -> {}\n", a.input, r.from, r.to, r.tensors,
               format_bytes(r.output_bytes), r.seconds, a.output);
}

}  // namespace

void register_convert_commands(CLI::App& app, const GlobalOptions& global, int& /*exit_code*/) {
  auto c = std::make_shared<ConvertArgs>();
  auto* convert = app.add_subcommand(
      "convert", "Convert between torch.save (.pt) and safetensors; reads .pt without executing anything");
  convert->add_option("input", c->input, "torch.save or safetensors file")->required();
  convert->add_option("output", c->output, "Output file (.safetensors or .pt)")->required();
  convert->add_option("--to", c->to, "Output format when the extension does not say: safetensors or torch");
  convert->add_flag("-f,--force", c->force, "Overwrite an existing output");
  convert->footer(
      "Tensors that share a storage are written as separate copies; nested containers are flattened to dotted "
      "names; non-tensor values and safetensors __metadata__ are not carried over (a note says which).");
  convert->callback([c, &global] { run_convert(*c, global); });
}

}  // namespace mithril::cli
