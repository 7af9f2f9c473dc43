#include "moe/generate/model_dir.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <nlohmann/json.hpp>

#include "moe/core/error.h"
#include "moe/io/file.h"
#include "moe/kernels/quant_repack.h"
#include "moe/model/checkpoint.h"
#include "moe/model/gguf_model.h"
#include "moe/model/hf_model.h"
#include "moe/train/trainer.h"

namespace moe::generate {
namespace {

constexpr const char* kTag = "model";
constexpr int32_t kByteSeparator = 256;  // moe train's sample separator (train::kSepToken)

// eos_token_id as an int or a list of ints; anything else is an Error naming the key.
void AddIds(const nlohmann::json& v, const std::string& origin, const char* key,
            std::vector<int32_t>& out) {
  auto add = [&](const nlohmann::json& x) {
    MOE_CHECK(
        x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < (int64_t{1} << 31),
        kTag, "{}: '{}' must be a non-negative integer or a list of them, got {}", origin, key,
        x.dump());
    const int32_t id = static_cast<int32_t>(x.get<int64_t>());
    if (std::find(out.begin(), out.end(), id) == out.end()) out.push_back(id);
  };
  if (v.is_null()) return;
  if (v.is_array()) {
    for (const auto& x : v) add(x);
  } else {
    add(v);
  }
}

double Number(const nlohmann::json& j, const char* key, const std::string& origin, double dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  MOE_CHECK(j[key].is_number(), kTag, "{}: '{}' must be a number, got {}", origin, key,
            j[key].dump());
  return j[key].get<double>();
}

}  // namespace

void ReadGenerationConfig(const std::string& json_text, const std::string& origin,
                          SamplerOptions& so, std::vector<int32_t>& eos) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    Fail(kTag, "{}: not valid JSON: {}", origin, e.what());
  }
  MOE_CHECK(j.is_object(), kTag, "{}: expected a JSON object", origin);
  if (j.contains("eos_token_id")) AddIds(j["eos_token_id"], origin, "eos_token_id", eos);
  const bool sample = j.value("do_sample", false);
  if (sample) {
    so.temperature = Number(j, "temperature", origin, 1.0);
    so.top_k = static_cast<int64_t>(Number(j, "top_k", origin, 50));
    so.top_p = Number(j, "top_p", origin, 1.0);
    so.min_p = Number(j, "min_p", origin, 0.0);
  }
  so.repetition_penalty = Number(j, "repetition_penalty", origin, 1.0);
  try {
    so.Validate();
  } catch (const Error& e) {
    Fail(kTag, "{}: {}", origin, e.what());
  }
}

std::vector<int32_t> ModelDir::EncodePrompt(const std::string& text,
                                            bool add_special_tokens) const {
  if (byte_level) {
    std::vector<int32_t> t;
    if (add_special_tokens) t.push_back(kByteSeparator);
    for (unsigned char ch : text) t.push_back(ch);
    return t;
  }
  return tokenizer.Encode(text, add_special_tokens);
}

namespace {

// Byte-level fallback of models without a tokenizer (moe train): ids past the bytes end samples.
void UseBytes(ModelDir& m, const std::string& path) {
  m.byte_level = true;
  MOE_CHECK(m.config.vocab_size >= 256, kTag,
            "'{}' has no tokenizer and its vocab_size = {} is too small for bytes", path,
            m.config.vocab_size);
  for (int32_t id = 256; id < m.config.vocab_size; ++id) m.stop_ids.push_back(id);
}

// MemAvailable of /proc/meminfo (bytes), else the free physical pages.
double AvailableMemory() {
  try {
    const std::string info = io::ReadFile("/proc/meminfo", 1 << 16);
    const size_t at = info.find("MemAvailable:");
    if (at != std::string::npos) return std::stod(info.substr(at + 13)) * 1024.0;
  } catch (const std::exception&) {
  }
  return static_cast<double>(::sysconf(_SC_AVPHYS_PAGES)) *
         static_cast<double>(::sysconf(_SC_PAGE_SIZE));
}

ModelDir OpenGguf(const std::string& path) {
  // Mapped: weights stay in the file as stored (quantised blocks run QuantMatMul).
  model::GgufModel g = model::LoadGgufModel(path, {.mapped = true});
  ModelDir m;
  if (kernels::HasTiledKernels()) {
    const int64_t bytes = model::RepackableBytes(g.weights);
    if (bytes > 0 && ShouldRepack(bytes, AvailableMemory())) {
      Context ctx;
      // The copied originals' pages leave the resident set (they stay in the page cache, which
      // the kernel may reclaim): resident memory stays about the file's size.
      const long page = ::sysconf(_SC_PAGE_SIZE);
      m.repacked_bytes = model::RepackForDecode(g.weights, ctx, [&](const void* p, int64_t n) {
        const auto a = reinterpret_cast<uintptr_t>(p);
        const uintptr_t lo = (a + page - 1) / page * page, hi = (a + n) / page * page;
        if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
      });
    }
  }
  m.path = path;
  m.config = std::move(g.config);
  m.weights = std::move(g.weights);
  m.chat_template = std::move(g.chat_template);
  if (g.tokenizer) {
    m.tokenizer = tokenizer::Tokenizer::FromSpec(std::move(*g.tokenizer), path);
    MOE_CHECK(m.tokenizer.vocab_size() <= m.config.vocab_size, kTag,
              "{}: the tokenizer has ids up to {} but the model's vocab_size is {}", path,
              m.tokenizer.vocab_size() - 1, m.config.vocab_size);
    if (m.tokenizer.eos_id()) m.stop_ids.push_back(*m.tokenizer.eos_id());
  } else {
    UseBytes(m, path);
  }
  if (m.config.eos_id >= 0 &&
      std::find(m.stop_ids.begin(), m.stop_ids.end(), m.config.eos_id) == m.stop_ids.end())
    m.stop_ids.push_back(m.config.eos_id);
  return m;
}

}  // namespace

bool ShouldRepack(int64_t bytes, double available_bytes) {
  if (const char* env = std::getenv("MOE_REPACK"); env && *env) {
    const std::string v = env;
    MOE_CHECK(v == "0" || v == "1", kTag, "MOE_REPACK='{}' must be 0 (never regroup Q8_0 / Q4_0 / "
              "K-quants for decode) or 1 (when it fits in memory)", v);
    if (v == "0") return false;
  }
  return static_cast<double>(bytes) <= available_bytes / 2;
}

// A folder runs as f32 in memory (4 bytes per parameter). One that cannot fit this machine's RAM
// is refused with the way out, instead of swapping or being killed half-way through loading
// (a config whose sizes the files cannot hold is left to the loader's own error).
void CheckFolderFitsInMemory(const std::string& path, double ram_bytes) {
  const model::ModelConfig cfg = model::ReadHfConfig(path);
  const double params = model::CountParams(cfg).total();
  const double need = params * 4;
  const double have = ram_bytes;
  if (have <= 0 || need <= have) return;
  if (params * 2 > static_cast<double>(model::HfTensorFiles::Open(path).DataBytes())) return;
  Fail(kTag,
       "{}: {:.4g} parameters take {:.1f} GB as f32 in memory, more than this machine's {:.1f} "
       "GB of RAM. Convert the folder once with `moe quantize {} model.gguf --type Q4_K_M` "
       "(streamed: little memory) and run model.gguf, which is mapped and read as needed",
       path, params, need / 1e9, have / 1e9, path);
}

ModelDir OpenModelDir(const std::string& dir) {
  MOE_CHECK(io::PathExists(dir), kTag, "'{}' does not exist", dir);
  if (!io::IsDirectory(dir)) {
    MOE_CHECK(dir.ends_with(".gguf"), kTag,
              "'{}' is a file but not a .gguf model (expected a model folder or a .gguf file)",
              dir);
    return OpenGguf(dir);
  }
  // A training run's folder: its newest checkpoint.
  const std::string path = !io::PathExists(dir + "/config.json") && io::PathExists(dir + "/LATEST")
                               ? train::LatestCheckpoint(dir)
                               : dir;
  MOE_CHECK(io::PathExists(path + "/config.json"), kTag,
            "'{}' is not a model folder: no config.json (expected a Hugging Face folder or one "
            "written by moe train)",
            path);
  ModelDir m;
  m.path = path;
  CheckFolderFitsInMemory(path, static_cast<double>(::sysconf(_SC_PHYS_PAGES)) *
                                    static_cast<double>(::sysconf(_SC_PAGE_SIZE)));
  model::LoadedModel lm = model::LoadModel(path);
  m.config = std::move(lm.config);
  m.weights = std::move(lm.weights);
  const std::string tj = path + "/tokenizer.json";
  if (io::PathExists(tj)) {
    m.tokenizer = tokenizer::Tokenizer::FromFile(tj);
    MOE_CHECK(m.tokenizer.vocab_size() <= m.config.vocab_size, kTag,
              "{}: the tokenizer has ids up to {} but the model's vocab_size is {}", tj,
              m.tokenizer.vocab_size() - 1, m.config.vocab_size);
  } else {
    UseBytes(m, path);
  }
  if (m.config.eos_id >= 0) m.stop_ids.push_back(m.config.eos_id);
  const std::string gc = path + "/generation_config.json";
  if (io::PathExists(gc))
    ReadGenerationConfig(io::ReadFile(gc, 1 << 20), gc, m.sampling, m.stop_ids);
  if (!m.byte_level && m.tokenizer.eos_id() &&
      std::find(m.stop_ids.begin(), m.stop_ids.end(), *m.tokenizer.eos_id()) == m.stop_ids.end())
    m.stop_ids.push_back(*m.tokenizer.eos_id());
  const std::string tc = path + "/tokenizer_config.json";
  if (io::PathExists(tc)) m.tokenizer_config = tc;
  return m;
}

}  // namespace moe::generate
