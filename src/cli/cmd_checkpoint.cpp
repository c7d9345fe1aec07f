#include "cli/commands.hpp"

namespace mithril::cli {

void register_checkpoint_commands(CLI::App&, const GlobalOptions&, int&) {}

}  // namespace mithril::cli
