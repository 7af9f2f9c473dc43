#include "moe/model/weights.h"

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "moe/core/error.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/quant_repack.h"

namespace moe::model {

void ModelWeights::Allocate(const ModelConfig& cfg, DType dtype, bool storage) {
  auto make = [&](Shape shape) {
    return storage ? Tensor(dtype, shape) : Tensor::ShapeOnly(dtype, shape);
  };
  cfg.Validate();
  const int64_t d = cfg.d_model;
  embed = make({cfg.vocab_size, d});
  layers.clear();
  layers.resize(static_cast<size_t>(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LayerWeights& L = layers[static_cast<size_t>(l)];
    L.attn_norm = make({d});
    if (cfg.mla.enabled()) {
      const MlaConfig& m = cfg.mla;
      if (m.q_lora_rank > 0) {
        L.wq_a = make({m.q_lora_rank, d});
        L.q_a_norm = make({m.q_lora_rank});
        L.wq_b = make({cfg.q_dim(), m.q_lora_rank});
      } else {
        L.wq = make({cfg.q_dim(), d});
      }
      L.wkv_a = make({m.kv_lora_rank + m.qk_rope_head_dim, d});
      L.kv_a_norm = make({m.kv_lora_rank});
      L.wkv_b = make({cfg.n_heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank});
    } else {
      L.wq = make({cfg.q_dim(), d});
      L.wk = make({cfg.kv_dim(), d});
      L.wv = make({cfg.kv_dim(), d});
      if (cfg.qkv_bias) {
        L.bq = make({cfg.q_dim()});
        L.bk = make({cfg.kv_dim()});
        L.bv = make({cfg.kv_dim()});
      }
      if (cfg.qk_norm == QkNorm::kPerHead) {
        L.q_norm = make({cfg.head_dim});
        L.k_norm = make({cfg.head_dim});
      } else if (cfg.qk_norm == QkNorm::kFull) {
        L.q_norm = make({cfg.q_dim()});
        L.k_norm = make({cfg.kv_dim()});
      }
    }
    L.wo = make({d, cfg.n_heads * cfg.v_head_dim()});
    if (cfg.o_bias) L.bo = make({d});
    L.ffn_norm = make({d});
    L.is_moe = cfg.IsMoeLayer(l);
    if (L.is_moe) {
      L.moe.Allocate(cfg.moe, dtype, storage);
    } else {
      L.w13 = make({2 * cfg.dense_d_ff, d});
      L.w2 = make({d, cfg.dense_d_ff});
    }
  }
  final_norm = make({d});
  lm_head = cfg.tie_embeddings ? Tensor() : make({cfg.vocab_size, d});
}

namespace {
template <typename T>
void Fill(Tensor& t, Rng& rng, double std, double constant) {
  auto v = t.view<T>();
  for (int64_t i = 0; i < v.numel(); ++i)
    v[i] = static_cast<T>(std > 0 ? rng.Normal() * std : constant);
}
}  // namespace

void ModelWeights::InitRandom(const ModelConfig& cfg, DType dtype, Rng& rng) {
  Allocate(cfg, dtype);
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * static_cast<double>(cfg.n_layers));
  ForEachTensor([&](const std::string& name, Tensor& t) {
    double s = std, c = 0.0;
    if (name.ends_with("norm")) s = 0.0, c = 1.0;
    else if (name.ends_with(".bias") || name.ends_with(".bq") || name.ends_with(".bk") ||
             name.ends_with(".bv") || name.ends_with(".bo"))
      s = 0.0, c = 0.0;
    else if (name.ends_with(".wo") || name.ends_with("w2")) s = out_std;
    if (dtype == DType::kF64) Fill<double>(t, rng, s, c);
    else Fill<float>(t, rng, s, c);
  });
}

int64_t ModelWeights::NumParams() {
  int64_t n = 0;
  ForEachParameter([&](const std::string&, Tensor& t) { n += t.numel(); });
  return n;
}

void DeriveInferenceWeights(const ModelConfig& cfg, ModelWeights& w) {
  if (!cfg.mla.enabled()) return;
  const MlaConfig& m = cfg.mla;
  const int64_t h = cfg.n_heads, dn = m.qk_nope_head_dim, dv = m.v_head_dim, r = m.kv_lora_rank;
  std::vector<float> kv, kt;
  for (LayerWeights& L : w.layers) {
    const Tensor& b = L.wkv_b;
    MOE_CHECK(b.defined() && b.shape() == Shape({h * (dn + dv), r}), "model",
              "MLA wkv_b is {}, expected [{}, {}]", b.defined() ? b.shape().str() : "missing",
              h * (dn + dv), r);
    kv.resize(static_cast<size_t>(b.numel()));
    if (b.dtype() == DType::kF32) {
      std::memcpy(kv.data(), b.raw(), kv.size() * sizeof(float));
    } else {
      MOE_CHECK(IsQuantized(b.dtype()), "model", "MLA wkv_b is {}: expected F32 or block-quantised",
                DTypeName(b.dtype()));
      kernels::Dequantize(kernels::QuantTypeOf(b.dtype()), b.raw(), kv.data(), b.numel());
    }
    kt.resize(static_cast<size_t>(h * r * dn));
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < dn; ++i)
        for (int64_t c = 0; c < r; ++c)
          kt[static_cast<size_t>((hh * r + c) * dn + i)] =
              kv[static_cast<size_t>((hh * (dn + dv) + i) * r + c)];
    const bool q8 = b.dtype() != DType::kF32 && dn % 32 == 0;
    L.wkv_b_kt = Tensor(q8 ? DType::kQ8_0 : DType::kF32, {h * r, dn});
    if (q8) {
      kernels::Quantize(kernels::QuantType::kQ8_0, kt.data(), L.wkv_b_kt.raw(), h * r * dn);
    } else {
      std::memcpy(L.wkv_b_kt.raw(), kt.data(), kt.size() * sizeof(float));
    }
  }
}

}  // namespace moe::model

namespace moe::model {
namespace {

// Calls fn(tensor) for each matrix RepackForDecode may regroup (whatever its dtype).
template <typename W, typename Fn>
void ForEachDecodeMatrix(W& w, Fn&& fn) {
  for (auto& L : w.layers) {
    for (auto* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.wq_a, &L.wq_b, &L.wkv_a, &L.ffn.gate, &L.ffn.up,
                    &L.ffn.down, &L.moe.shared.gate, &L.moe.shared.up, &L.moe.shared.down})
      fn(*t);
    for (auto& e : L.moe.experts)
      for (auto* t : {&e.gate, &e.up, &e.down}) fn(*t);
  }
  fn(w.lm_head);
}

bool Repackable(const Tensor& t) {
  if (!t.defined() || !IsQuantized(t.dtype()) || kernels::IsTiled(t.dtype()) || t.shape().rank != 2)
    return false;
  const kernels::QuantType q = kernels::QuantTypeOf(t.dtype());
  return kernels::TiledOf(q) != DType::kF32 && t.shape()[0] % kernels::kTileRows == 0 &&
         t.shape()[1] % kernels::QuantBlockSize(q) == 0;
}

}  // namespace

int64_t RepackableBytes(const ModelWeights& w) {
  int64_t bytes = 0;
  ForEachDecodeMatrix(w, [&](const Tensor& t) {
    if (Repackable(t)) bytes += static_cast<int64_t>(t.nbytes());
  });
  return bytes;
}

int64_t RepackForDecode(ModelWeights& w, Context& ctx,
                        const std::function<void(const void*, int64_t)>& copied) {
  // One block for all the copies: 2 MiB pages where the kernel gives them (AlignedAlloc), so
  // decode streams experts of a few hundred KB without a TLB miss per 4 KiB, and loading takes
  // a page fault per 2 MiB instead of one per 4 KiB.
  const auto padded = [](const Tensor& t) { return (t.nbytes() + 63) / 64 * 64; };
  size_t total = 0;
  ForEachDecodeMatrix(w, [&](const Tensor& t) {
    if (Repackable(t)) total += padded(t);
  });
  if (total == 0) return 0;
  const std::shared_ptr<void> block(AlignedAlloc(total), AlignedFree);
  auto* next = static_cast<uint8_t*>(block.get());
  int64_t bytes = 0;
  ForEachDecodeMatrix(w, [&](Tensor& t) {
    if (!Repackable(t)) return;
    const int64_t n = t.shape()[0], k = t.shape()[1];
    const kernels::QuantType q = kernels::QuantTypeOf(t.dtype());
    const DType tiled = kernels::TiledOf(q);
    const int64_t tile_bytes = kernels::kTileRows * kernels::QuantRowBytes(q, k);
    Tensor out = Tensor::Borrow(tiled, t.shape(), next, block);  // every byte written below
    const auto* src = static_cast<const uint8_t*>(std::as_const(t).raw());
    uint8_t* dst = next;
    next += padded(t);
    ParallelForRange(n / kernels::kTileRows, ctx, [&](int64_t t0, int64_t t1, int) {
      kernels::RepackTiled(tiled, src + t0 * tile_bytes, (t1 - t0) * kernels::kTileRows, k,
                           dst + t0 * tile_bytes);
    }, 64);
    bytes += static_cast<int64_t>(out.nbytes());
    if (copied && t.borrowed()) copied(src, static_cast<int64_t>(t.nbytes()));
    t = std::move(out);
  });
  return bytes;
}

}  // namespace moe::model
