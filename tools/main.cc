// moe: train, run, serve and benchmark Mixture-of-Experts models.
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "moe/core/error.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moe: a C++ engine for Mixture-of-Experts language models"};
  app.set_version_flag("--version", std::string("moe ") + MOE_VERSION);
  app.require_subcommand(1);
  moe::cli::AddTrainCommands(app);
  moe::cli::AddBenchCommand(app);
  moe::cli::AddCorpusCommand(app);
  moe::cli::AddRunCommands(app);
  moe::cli::AddInspectCommand(app);
  moe::cli::AddChatTemplateCommand(app);
  moe::cli::AddQuantizeCommand(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moe: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
