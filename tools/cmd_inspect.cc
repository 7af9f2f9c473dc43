// `moe inspect MODEL`: architecture, attention, per-layer FFN kind, parameters (total vs active per
// token) and memory by part of a Hugging Face model folder or a .gguf file, from its config and
// file headers only (no weights are read or dequantised).
#include <cstdio>
#include <memory>
#include <string>

#include "moe/model/inspect.h"
#include "tools/commands.h"

namespace moe::cli {

void AddInspectCommand(CLI::App& root) {
  auto dir = std::make_shared<std::string>();
  auto* cmd = root.add_subcommand(
      "inspect", "Describe a Hugging Face model folder or a .gguf file (no weights are read)");
  cmd->add_option("model", *dir,
                  "Model folder (config.json + model.safetensors or shards) or .gguf file")
      ->required();
  cmd->callback([dir] { std::fputs(model::InspectModel(*dir).c_str(), stdout); });
}

}  // namespace moe::cli
