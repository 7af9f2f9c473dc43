// `moe run MODEL -p PROMPT` (streams the continuation) and `moe perplexity MODEL --file F`
// (strided perplexity) on a model folder: Hugging Face or one written by `moe train`.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/chat/chat_template.h"
#include "moe/core/context.h"
#include "moe/core/error.h"
#include "moe/generate/generator.h"
#include "moe/generate/model_dir.h"
#include "moe/io/file.h"
#include "moe/kernels/roofline.h"
#include "moe/model/transformer.h"
#include "tools/commands.h"

namespace moe::cli {
namespace {

struct SamplingCli {
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  uint64_t seed = 0;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;
  int64_t ctx_size = 0;
  int threads = 0;
  std::string trace_path;
  bool ignore_eos = false;
};

void AddSamplingOptions(CLI::App* cmd, SamplingCli& s) {
  cmd->add_option(
      "--temperature,-t", s.temperature,
      "Sampling temperature (0 = greedy; default: generation_config.json, else greedy)");
  cmd->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", s.top_p,
                  "Nucleus sampling: smallest set with probability >= p (1 = off)");
  cmd->add_option("--min-p", s.min_p, "Drop tokens with p < min_p * p_max (0 = off)");
  cmd->add_option("--repetition-penalty", s.repetition_penalty,
                  "Penalty on tokens already seen (1 = off)");
  cmd->add_option("--seed", s.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--max-tokens,-n", s.max_tokens, "New tokens at most")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--stop", s.stop, "Stop string (repeatable); the output ends before it");
  cmd->add_option("--ctx-size,-c", s.ctx_size,
                  "Context length to allocate (0 = min(model's, 4096))")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("--threads", s.threads, "Threads (0 = all cores or MOE_THREADS)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--routing-trace", s.trace_path,
                  "Write the chosen experts and gates per token and MoE layer (JSON lines)");
  cmd->add_flag("--ignore-eos", s.ignore_eos,
                "Keep generating past end-of-sequence tokens (for timing; --stop still applies)");
}

generate::GenerateOptions MakeOptions(const SamplingCli& s, const generate::ModelDir& m) {
  generate::GenerateOptions o;
  o.sampler = m.sampling;
  if (s.temperature) o.sampler.temperature = *s.temperature;
  if (s.top_k) o.sampler.top_k = *s.top_k;
  if (s.top_p) o.sampler.top_p = *s.top_p;
  if (s.min_p) o.sampler.min_p = *s.min_p;
  if (s.repetition_penalty) o.sampler.repetition_penalty = *s.repetition_penalty;
  o.sampler.seed = s.seed;
  o.max_tokens = s.max_tokens;
  o.stop = s.stop;
  if (!s.ignore_eos) o.stop_ids = m.stop_ids;
  o.Validate();
  return o;
}

// The --routing-trace output: a trace writing into an atomic file (temp name, renamed by Commit).
struct TraceOutput {
  std::optional<io::AtomicFileWriter> file;
  std::unique_ptr<generate::RoutingTrace> trace;
  TraceOutput(const std::string& path, const tokenizer::Tokenizer& tok) {
    if (path.empty()) return;
    file.emplace(path);
    trace = std::make_unique<generate::RoutingTrace>(
        [this](std::string_view s) { file->Append(s); }, &tok);
  }
  TraceOutput(const TraceOutput&) = delete;  // the sink points at this object
  TraceOutput& operator=(const TraceOutput&) = delete;
  void Commit() {
    if (file) file->Commit();
  }
};

// Generates, streaming the text to stdout as it becomes final, then ends the line.
generate::GenerateResult GenerateToStdout(generate::Generator& g, const std::vector<int32_t>& ids,
                                          const generate::GenerateOptions& o,
                                          generate::RoutingTrace* trace) {
  generate::GenerateResult r = g.Generate(
      ids, o,
      [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      },
      trace);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  return r;
}

void PrintStats(const generate::GenerateResult& r) {
  std::fprintf(
      stderr,
      "\n[%lld prompt tokens (%lld run) at %.1f tok/s; %lld generated at %.2f tok/s; stop: %s]\n",
      static_cast<long long>(r.prompt_tokens), static_cast<long long>(r.prefill_tokens),
      r.PrefillTokensPerSecond(), static_cast<long long>(r.tokens.size()),
      r.DecodeTokensPerSecond(), std::string(generate::FinishReasonName(r.finish)).c_str());
}

void RunCommand(const std::string& model_path, const std::string& prompt_arg,
                const std::string& prompt_file, bool raw, const SamplingCli& s) {
  MOE_CHECK(prompt_arg.empty() != prompt_file.empty(), "run",
            "give the prompt with -p TEXT or --prompt-file FILE");
  const std::string prompt =
      prompt_file.empty() ? prompt_arg : io::ReadFile(prompt_file, 64u << 20);
  Context ctx({.threads = s.threads});
  const double t0 = kernels::NowSeconds();
  const generate::ModelDir m = generate::OpenModelDir(model_path);
  std::fprintf(stderr, "model: %s: %s (loaded in %.1f s)\n", model_path.c_str(),
               m.config.Summary().c_str(), kernels::NowSeconds() - t0);
  const model::Transformer tf(m.config);
  const generate::GenerateOptions o = MakeOptions(s, m);
  generate::Generator g(tf, m.weights, m.tokenizer, ctx, s.ctx_size);
  TraceOutput trace(s.trace_path, m.tokenizer);
  const std::vector<int32_t> ids = m.EncodePrompt(prompt, !raw);
  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  const generate::GenerateResult r = GenerateToStdout(g, ids, o, trace.trace.get());
  trace.Commit();
  PrintStats(r);
  if (trace.trace)
    std::fprintf(stderr, "routing trace: %lld lines -> %s\n",
                 static_cast<long long>(trace.trace->lines()), s.trace_path.c_str());
}

void PerplexityCommand(const std::string& model_path, const std::string& file, int64_t window,
                       int64_t stride, int threads) {
  Context ctx({.threads = threads});
  const generate::ModelDir m = generate::OpenModelDir(model_path);
  std::fprintf(stderr, "model: %s: %s\n", model_path.c_str(), m.config.Summary().c_str());
  const std::string text = io::ReadFile(file, uint64_t{1} << 30);
  const std::vector<int32_t> ids = m.EncodePrompt(text, true);
  if (window == 0) window = std::min<int64_t>(m.config.max_seq, 1024);
  if (stride == 0) stride = std::max<int64_t>(1, window / 2);
  const model::Transformer tf(m.config);
  generate::Generator g(tf, m.weights, m.tokenizer, ctx, window);
  std::fprintf(stderr, "%s: %zu bytes, %zu tokens; window %lld, stride %lld\n", file.c_str(),
               text.size(), ids.size(), static_cast<long long>(window),
               static_cast<long long>(stride));
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const double t0 = kernels::NowSeconds();
  const generate::PerplexityResult r =
      generate::StridedPerplexity(g, ids, window, stride, [&](int64_t done, int64_t total) {
        if (!tty) return;
        const double el = kernels::NowSeconds() - t0;
        std::fprintf(stderr, "\r  %lld / %lld tokens  %.0f tok/s  ETA %.0f s   ",
                     static_cast<long long>(done), static_cast<long long>(total),
                     done / std::max(el, 1e-9),
                     el / std::max<double>(1, done) * static_cast<double>(total - done));
      });
  if (tty) std::fputc('\n', stderr);
  std::printf(
      "perplexity %.4f  (%.4f nats/token, %.4f bits/token, %lld tokens scored in %lld windows, "
      "%.1f s)\n",
      r.Perplexity(), r.nll / static_cast<double>(r.predicted), r.BitsPerToken(),
      static_cast<long long>(r.predicted), static_cast<long long>(r.windows), r.seconds);
}

struct ChatCli {
  std::string model, system, template_path, template_name, vars = "{}";
};

void ChatCommand(const ChatCli& c, const SamplingCli& s) {
  Context ctx({.threads = s.threads});
  const generate::ModelDir m = generate::OpenModelDir(c.model);
  std::fprintf(stderr, "model: %s: %s\n", c.model.c_str(), m.config.Summary().c_str());
  chat::ChatTemplate tmpl = [&] {
    if (!c.template_path.empty()) {
      const auto bos = m.tokenizer.bos_id(), eos = m.tokenizer.eos_id();
      return chat::ChatTemplate::FromFile(c.template_path,
                                          bos ? std::string(*m.tokenizer.IdToToken(*bos)) : "",
                                          eos ? std::string(*m.tokenizer.IdToToken(*eos)) : "");
    }
    if (m.tokenizer_config.empty() && !m.chat_template.empty()) {
      const auto bos = m.tokenizer.bos_id(), eos = m.tokenizer.eos_id();
      return chat::ChatTemplate::FromString(m.chat_template, m.path + " tokenizer.chat_template",
                                            bos ? std::string(*m.tokenizer.IdToToken(*bos)) : "",
                                            eos ? std::string(*m.tokenizer.IdToToken(*eos)) : "");
    }
    MOE_CHECK(!m.tokenizer_config.empty(), "chat",
              "'{}' has no tokenizer_config.json with a chat_template; give one with "
              "--chat-template FILE",
              c.model);
    return chat::ChatTemplate::FromTokenizerConfig(m.tokenizer_config, c.template_name);
  }();
  nlohmann::ordered_json vars;
  try {
    vars = nlohmann::ordered_json::parse(c.vars);
  } catch (const nlohmann::json::exception& e) {
    Fail("chat", "--vars is not valid JSON: {}", e.what());
  }
  MOE_CHECK(vars.is_object(), "chat", "--vars must be a JSON object, got {}", c.vars);
  generate::GenerateOptions o = MakeOptions(s, m);
  // The end of an assistant turn: the template's eos token, when the tokenizer knows it.
  if (!tmpl.eos_token().empty())
    if (auto id = m.tokenizer.TokenToId(tmpl.eos_token());
        id && std::find(o.stop_ids.begin(), o.stop_ids.end(), *id) == o.stop_ids.end())
      o.stop_ids.push_back(*id);
  const model::Transformer tf(m.config);
  generate::Generator g(tf, m.weights, m.tokenizer, ctx, s.ctx_size);
  TraceOutput trace(s.trace_path, m.tokenizer);

  std::vector<chat::ChatMessage> messages;
  if (!c.system.empty()) messages.push_back({"system", c.system});
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  if (tty)
    std::fprintf(stderr, "chat: one line per message; /reset starts over, /exit or Ctrl-D ends\n");
  std::string line;
  while (true) {
    if (tty) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(c.system.empty() ? 0 : 1);
      g.Reset();
      std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const std::string prompt = tmpl.Render(messages, true, vars);
    // The rendered template carries the special tokens itself (as apply_chat_template tokenizes).
    const std::vector<int32_t> ids = m.EncodePrompt(prompt, false);
    if (static_cast<int64_t>(ids.size()) >= g.capacity()) {
      std::fprintf(stderr,
                   "the conversation (%zu tokens) no longer fits the context of %lld; /reset, or "
                   "raise --ctx-size\n",
                   ids.size(), static_cast<long long>(g.capacity()));
      messages.pop_back();
      continue;
    }
    const generate::GenerateResult r = GenerateToStdout(g, ids, o, trace.trace.get());
    PrintStats(r);
    messages.push_back({"assistant", r.text});
  }
  trace.Commit();
}

}  // namespace

void AddRunCommands(CLI::App& root) {
  {
    auto* cmd = root.add_subcommand(
        "run",
        "Continue a prompt with a model folder (Hugging Face or moe train), streaming tokens");
    auto model = std::make_shared<std::string>();
    auto prompt = std::make_shared<std::string>();
    auto prompt_file = std::make_shared<std::string>();
    auto raw = std::make_shared<bool>(false);
    auto s = std::make_shared<SamplingCli>();
    cmd->add_option("model", *model, "Model folder or .gguf file")->required();
    cmd->add_option("--prompt,-p", *prompt, "Prompt text");
    cmd->add_option("--prompt-file,-f", *prompt_file, "Read the prompt from a file");
    cmd->add_flag("--raw", *raw, "Do not add the tokenizer's special tokens (BOS) to the prompt");
    AddSamplingOptions(cmd, *s);
    cmd->callback([=] { RunCommand(*model, *prompt, *prompt_file, *raw, *s); });
  }
  {
    auto* cmd = root.add_subcommand(
        "chat", "Interactive chat with a model folder, using its chat template");
    auto c = std::make_shared<ChatCli>();
    auto s = std::make_shared<SamplingCli>();
    cmd->add_option("model", c->model, "Model folder or .gguf file")->required();
    cmd->add_option("--system", c->system, "System message");
    cmd->add_option("--chat-template", c->template_path,
                    "Jinja template file (default: tokenizer_config.json's)");
    cmd->add_option("--template-name", c->template_name,
                    "Which named template of tokenizer_config.json (default: 'default')");
    cmd->add_option(
        "--vars", c->vars,
        "Extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
    AddSamplingOptions(cmd, *s);
    cmd->callback([=] { ChatCommand(*c, *s); });
  }
  {
    auto* cmd = root.add_subcommand("perplexity", "Strided perplexity of a model on a text file");
    auto model = std::make_shared<std::string>();
    auto file = std::make_shared<std::string>();
    auto window = std::make_shared<int64_t>(0);
    auto stride = std::make_shared<int64_t>(0);
    auto threads = std::make_shared<int>(0);
    cmd->add_option("model", *model, "Model folder or .gguf file")->required();
    cmd->add_option("--file,-f", *file, "Text file")->required();
    cmd->add_option("--window", *window, "Tokens per window (0 = min(model context, 1024))")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
    cmd->add_option("--stride", *stride, "Tokens between window starts (0 = window / 2)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
    cmd->add_option("--threads", *threads, "Threads (0 = all cores or MOE_THREADS)")
        ->check(CLI::Range(0, 1024));
    cmd->callback([=] { PerplexityCommand(*model, *file, *window, *stride, *threads); });
  }
}

}  // namespace moe::cli
