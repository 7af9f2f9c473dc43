// Subcommands of the `moe` CLI: each file registers one on the root app.
#pragma once

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddBenchCommand(CLI::App& root);
void AddBenchModelCommand(CLI::App& bench);  // bench model (called by AddBenchCommand)
void AddTrainCommands(CLI::App& root);  // train, demo, eval, generate
void AddCorpusCommand(CLI::App& root);
void AddRunCommands(CLI::App& root);  // run, chat, perplexity
void AddInspectCommand(CLI::App& root);
void AddChatTemplateCommand(CLI::App& root);
void AddQuantizeCommand(CLI::App& root);

}  // namespace moe::cli
