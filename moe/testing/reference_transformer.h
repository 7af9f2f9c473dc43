// Scalar double references for the transformer kernels (rope, attention, cross-entropy,
// embedding, AdamW), written from the math rather than from the kernels: RoPE as an explicit
// per-position rotation matrix, attention as the full score matrix, AdamW element by element.
// All arrays are dense row-major; each function names its shapes.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/kernels/adamw.h"
#include "moe/kernels/rope.h"

namespace moe::testing {

// ---- RoPE --------------------------------------------------------------------------------------

// The r/2 scaled inverse frequencies (see moe/kernels/rope.h for the formulas).
std::vector<double> RefRopeInvFreq(int64_t rotary_dim, double theta,
                                   const kernels::RopeScaling& scaling);
// The cos/sin multiplier m (YaRN: mscale(factor, mscale) / mscale(factor, mscale_all_dim)).
double RefRopeCosSinScale(const kernels::RopeScaling& scaling);

struct RefRopeSpec {
  std::vector<double> inv_freq;  // [r/2]
  double scale = 1.0;            // m
  int64_t rotary_dim = 0;        // r
  int64_t offset = 0;            // first rotated dim of each head
  bool interleaved = false;      // pairs (2i, 2i+1) instead of (i, i + r/2)
};

// The [Dh, Dh] matrix M with y_head = M x_head at position pos.
std::vector<double> RefRopeMatrix(const RefRopeSpec& spec, int64_t head_dim, int64_t pos);
// y[t, h] = M(positions[t]) x[t, h]   (x, y [T, H, Dh])
std::vector<double> RefRope(const double* x, int64_t t, int64_t h, int64_t dh,
                            const int32_t* positions, const RefRopeSpec& spec);
// dx[t, h] = M(positions[t])^T dy[t, h]
std::vector<double> RefRopeBackward(const double* dy, int64_t t, int64_t h, int64_t dh,
                                    const int32_t* positions, const RefRopeSpec& spec);

// ---- attention ---------------------------------------------------------------------------------

struct RefAttentionShape {
  int64_t b = 1, t = 1, s = 1, h = 1, hkv = 1, dk = 1, dv = 1, pos0 = 0;
};
struct RefAttentionOut {
  std::vector<double> out;  // [B, T, H, Dv]
  std::vector<double> lse;  // [B, H, T]
};
// q [B,T,H,Dk], k [B,S,Hkv,Dk], v [B,S,Hkv,Dv]; query t attends keys 0..pos0+t.
RefAttentionOut RefAttention(const double* q, const double* k, const double* v,
                             const RefAttentionShape& s, double scale);
struct RefAttentionGrads {
  std::vector<double> dq, dk, dv;
};
// Gradients of sum(out * dout).
RefAttentionGrads RefAttentionBackward(const double* q, const double* k, const double* v,
                                       const double* dout, const RefAttentionShape& s,
                                       double scale);

// ---- cross-entropy -----------------------------------------------------------------------------

struct RefCrossEntropyOut {
  double loss = 0;  // mean over rows with target >= 0 (0 if none)
  int64_t count = 0;
  std::vector<double> row_loss;  // [T], 0 for ignored rows
};
RefCrossEntropyOut RefCrossEntropy(const double* logits, const int32_t* targets, int64_t t,
                                   int64_t v);
// scale * d(sum_t row_loss[t]) / dlogits   [T, V]
std::vector<double> RefCrossEntropyBackward(const double* logits, const int32_t* targets, int64_t t,
                                            int64_t v, double scale);

// ---- embedding ---------------------------------------------------------------------------------

// y [T, D] = table[ids]
std::vector<double> RefEmbedding(const double* table, const int32_t* ids, int64_t t, int64_t d);
// dtable [V, D]: sum of dy rows per id
std::vector<double> RefEmbeddingBackward(const double* dy, const int32_t* ids, int64_t t, int64_t v,
                                         int64_t d);

// ---- AdamW -------------------------------------------------------------------------------------

// One torch.optim.AdamW step in double, in place on param, m, v [n]; step is 1-based.
void RefAdamWStep(double* param, const double* grad, double* m, double* v, int64_t n,
                  const kernels::AdamWOptions& opts, int64_t step);
// sqrt(sum of squares over all buffers)
double RefGlobalNorm(const std::vector<std::vector<double>>& grads);

}  // namespace moe::testing
