// `moe quantize IN OUT --type Q4_K_M`: a Hugging Face / moe model folder or a GGUF file -> a GGUF
// file in the llama.cpp layout (moe/model/gguf_model.h), with the tokenizer when it has a GGUF
// form (tokenizer.json of a byte-level BPE or SentencePiece family; else a warning).
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "moe/core/context.h"
#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/model/gguf_model.h"
#include "moe/model/hf_model.h"
#include "moe/tokenizer/gguf_vocab.h"
#include "moe/tokenizer/hf_json.h"
#include "moe/train/trainer.h"
#include "tools/commands.h"

namespace moe::cli {

namespace {
struct QuantizeArgs {
  std::string in, out, type = "Q4_K_M";
};

void RunQuantize(const QuantizeArgs& a) {
  const model::GgufScheme scheme = model::ParseGgufScheme(a.type);
  model::ModelConfig cfg;
  std::optional<tokenizer::TokenizerSpec> tok;
  std::string chat_template;
  // Streamed: the input is checked whole, then each tensor is read (converted or dequantised to
  // f32) when the writer needs it and dropped after, so a model larger than memory converts.
  std::function<void(const std::string&, Tensor&)> load;
  if (!io::IsDirectory(a.in) && a.in.ends_with(".gguf")) {
    const model::GgufWeightReader reader = model::GgufWeightReader::Open(a.in);
    cfg = reader.config();
    tok = tokenizer::TokenizerSpecFromGguf(reader.file());
    chat_template = reader.file().GetString("tokenizer.chat_template", "");
    load = [reader](const std::string& name, Tensor& t) { reader.Fill(name, t); };
  } else {
    // A training run's folder: its newest checkpoint.
    const std::string dir =
        !io::PathExists(a.in + "/config.json") && io::PathExists(a.in + "/LATEST")
            ? train::LatestCheckpoint(a.in)
            : a.in;
    const model::HfWeightReader reader = model::HfWeightReader::Open(dir);
    cfg = reader.config();
    load = [reader](const std::string& name, Tensor& t) { reader.Fill(name, t); };
    const std::string tj = dir + "/tokenizer.json";
    if (io::PathExists(tj)) tok = tokenizer::ParseHfTokenizerJson(io::ReadFile(tj, 256 << 20), tj);
    const std::string tc = dir + "/tokenizer_config.json";
    if (io::PathExists(tc)) {
      const nlohmann::json j = nlohmann::json::parse(io::ReadFile(tc, 64 << 20), nullptr, false);
      if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
        chat_template = j["chat_template"].get<std::string>();
    }
  }
  model::ModelWeights weights;
  weights.Allocate(cfg, DType::kF32, /*storage=*/false);
  std::fprintf(stderr, "quantize: %s -> %s as %s\n", a.in.c_str(), a.out.c_str(), a.type.c_str());
  model::GgufSaveOptions opts;
  opts.scheme = scheme;
  opts.tokenizer = tok ? &*tok : nullptr;
  opts.chat_template = chat_template;
  opts.load = std::move(load);
  Context ctx;
  opts.ctx = &ctx;
  opts.progress = [](size_t i, size_t n, const std::string& name, std::string_view type) {
    std::fprintf(stderr, "[%4zu/%4zu] %-36s %s\n", i + 1, n, name.c_str(),
                 std::string(type).c_str());
  };
  opts.warn = [](const std::string& m) {
    std::fprintf(stderr, "quantize: warning: %s\n", m.c_str());
  };
  if (!tok) std::fprintf(stderr, "quantize: warning: no tokenizer to embed\n");
  model::SaveGgufModel(cfg, weights, a.out, opts);
  std::fprintf(stderr, "quantize: wrote %s\n", a.out.c_str());
}
}  // namespace

void AddQuantizeCommand(CLI::App& root) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = root.add_subcommand(
      "quantize",
      "Write a model folder or GGUF file as GGUF (F32, F16, Q8_0, Q4_0, Q4_K_M, Q5_K_M)");
  cmd->add_option("in", a->in, "Model folder (Hugging Face or moe train) or .gguf file")
      ->required();
  cmd->add_option("out", a->out, "Output .gguf file")->required();
  cmd->add_option("--type", a->type, "F32, F16, Q8_0, Q4_0, Q4_K_M or Q5_K_M")
      ->capture_default_str();
  cmd->callback([a] { RunQuantize(*a); });
}

}  // namespace moe::cli
