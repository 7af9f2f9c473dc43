// GGUF model files (the llama.cpp layout) <-> ModelConfig + ModelWeights + TokenizerSpec.
//
// Architectures (`general.architecture`): llama (dense Llama/Mistral and Mixtral-style MoE, with
// merged `blk.N.ffn_{gate,up,down}_exps` or older per-expert `blk.N.ffn_gate.E.weight` tensors),
// qwen2, qwen2moe (shared expert + ffn_gate_inp_shexp), qwen3moe (attn_q_norm/attn_k_norm per
// head), olmoe (full-width q/k norms) and deepseek2 (DeepSeek-V2/V3: MLA with attn_kv_b, or the
// attn_k_b + attn_v_b pair of newer converters, rebuilt into wkv_b as f32; softmax or sigmoid
// routing with groups and selection bias). Hyper-parameters come from `<arch>.*` keys.
//
// llama-arch files store the rows of attn_q / attn_k permuted for ggml's interleaved RoPE (pairs
// (2i, 2i+1) of each head) where Hugging Face rotates halves (i, i + Dh/2); the loader undoes the
// permutation and the writer applies it, so the transformer always runs the rotate-half pairing.
//
// Two ways to load (GgufLoadOptions::mapped):
//  * mapped (for running): matrices stay in the file's mapping, F32 or block-quantised as stored
//    (F16/BF16 matrices are converted to f32), so memory is about the file size and pages come
//    from disk as they are first used; the experts take the inference layout (gate, up and down
//    apart, moe/mixture/experts.h) and the products run QuantMatMul on the stored blocks. llama
//    attn_q / attn_k keep the file's row order and RoPE runs on interleaved pairs instead (the
//    same rotation). Inference only: training and SaveGgufModel need the f32 layout.
//  * f32 (for converting and tests): every tensor is dequantised to f32 in the training layout,
//    4 bytes per parameter, with attn_q / attn_k rows in Hugging Face order.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "moe/core/context.h"
#include "moe/io/gguf.h"
#include "moe/model/config.h"
#include "moe/model/weights.h"
#include "moe/tokenizer/spec.h"

namespace moe::model {

struct GgufModel {
  ModelConfig config;
  ModelWeights weights;
  std::string architecture;                           // general.architecture
  std::optional<tokenizer::TokenizerSpec> tokenizer;  // when the file embeds one
  std::string chat_template;                          // tokenizer.chat_template ("" when absent)
};

struct GgufLoadOptions {
  bool mapped = false;  // see the file comment
};

GgufModel LoadGgufModel(const std::string& path, const GgufLoadOptions& opts = {});

// The canonical f32 tensors of a GGUF file (ModelWeights::ForEachTensor names), dequantised one
// at a time: what the f32 LoadGgufModel fills a model from, and what `moe quantize` of a .gguf
// streams through. Open checks every tensor (present, supported type, shape) and that the file
// holds none the model does not use, before any tensor data is read.
class GgufWeightReader {
 public:
  static GgufWeightReader Open(const std::string& path);
  const ModelConfig& config() const;
  const std::string& architecture() const;  // general.architecture
  const io::GgufFile& file() const;
  // Fills t (F32 of the canonical shape; shape-only tensors get storage here).
  void Fill(const std::string& name, Tensor& t) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// The GGUF architectures LoadGgufModel reads, joined by ", ".
std::string GgufArchitectureNames();

// Weight-type schemes of `moe quantize` (docs/FORMATS.md lists the per-tensor rule).
enum class GgufScheme : uint8_t { kF32, kF16, kQ8_0, kQ4_0, kQ4_K_M, kQ5_K_M };
GgufScheme ParseGgufScheme(std::string_view name);  // "Q4_K_M", ...; Error listing the names
std::string_view Name(GgufScheme s);

struct GgufSaveOptions {
  GgufScheme scheme = GgufScheme::kF32;
  const tokenizer::TokenizerSpec* tokenizer = nullptr;  // written when set (and representable)
  std::string chat_template;
  std::string name;  // general.name
  // Called once per tensor written: (index, count, gguf name, ggml type name).
  std::function<void(size_t, size_t, const std::string&, std::string_view)> progress;
  // Called with a message when the tokenizer cannot be written (it is then skipped).
  std::function<void(const std::string&)> warn;
  // Quantises rows in parallel on this context when set (the bytes do not depend on it).
  Context* ctx = nullptr;
  // MLA (deepseek2) only: write each layer's kv_b as the attn_k_b + attn_v_b pair with the
  // key_length_mla / value_length_mla metadata of newer llama.cpp converters instead of the older
  // attn_kv_b (docs/FORMATS.md); an Error for other models. Off by default (`moe quantize`).
  bool split_mla_kv_b = false;
  // Streams the weights: when set, `weights` may hold shape-only tensors (ModelWeights::Allocate
  // with storage = false); load(name, tensor) fills each (a ForEachTensor name) when the first
  // GGUF tensor that needs it is written, and it is released after the last. Memory then holds a
  // few tensors, not the model (`moe quantize` of a folder).
  std::function<void(const std::string& name, Tensor& t)> load;
};

// Writes cfg + weights as a GGUF file (atomic: path.tmp then rename). The GGUF architecture comes
// from cfg.architecture (Mixtral/Llama/Mistral -> llama, Qwen2 -> qwen2, Qwen2-MoE -> qwen2moe,
// Qwen3-MoE -> qwen3moe, OLMoE -> olmoe, DeepSeek-V2/V3 -> deepseek2; a moe-trained model ->
// llama when it fits). Options a
// GGUF architecture cannot express are an Error naming them.
void SaveGgufModel(const ModelConfig& cfg, ModelWeights& weights, const std::string& path,
                   const GgufSaveOptions& opts = {});

}  // namespace moe::model

namespace moe::io {
class GgufFile;
}  // namespace moe::io

namespace moe::model {

// The ModelConfig a GGUF file describes, from its metadata and tensor infos only (no tensor data
// is read): what LoadGgufModel builds before it loads weights, and what `moe inspect` prints.
// `arch` (when set) receives general.architecture. Error naming `path` for an unsupported
// architecture, a missing key or token_embd, or sizes the tensors cannot hold.
ModelConfig GgufModelConfig(const io::GgufFile& f, const std::string& path,
                            std::string* arch = nullptr);

}  // namespace moe::model
