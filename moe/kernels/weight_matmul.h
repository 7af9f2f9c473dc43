// Linear products against weights as inference stores them: f32 (sgemm, or the few-row kernel of
// MatMulNT) or block-quantised (Q8_0 / Q4_0 / Q4_K / Q5_K / Q6_K through QuantMatMul's integer
// kernels), owned or borrowed from a memory-mapped file.
//
// Several products can run together (the q, k and v projections of one token; the gate and up
// projections of every chosen expert, then their down projections): with few rows of x (decode)
// the weight rows of all of them are split over the pool in one parallel region, by bytes, so
// each weight byte is read once and the threads finish together however mixed the types and
// sizes are. Products with more rows (prefill) run one after another, each split over the pool,
// except F32 ones when there are at least 4 per thread (prefill's experts): each thread then
// runs whole products, so one thread's sgemm packing (bound by memory) overlaps the other's
// multiplies.
#pragma once

#include <cstdint>
#include <span>

#include "moe/core/context.h"
#include "moe/core/dtype.h"
#include "moe/core/tensor.h"

namespace moe::kernels {

// A Linear weight [n, k] (n outputs of k inputs, the PyTorch [out, in] layout) as stored.
struct WeightRef {
  DType dtype = DType::kF32;  // F32 or a block-quantised dtype
  const void* data = nullptr;
  int64_t n = 0, k = 0;
};

// The WeightRef of a rank-2 tensor [n, k] of F32 or a block-quantised dtype; Error naming the
// dtype and shape otherwise (`what` names the weight in the message).
WeightRef AsWeight(const Tensor& w, const char* what = "weight");

// Bytes of the weight (what one product with few rows reads).
int64_t WeightBytes(const WeightRef& w);

// y[m, w.n] = x[m, w.k] * W^T; x and y row-major and contiguous. x must be finite when W is
// quantised (x is quantised to 8-bit blocks first; see moe/kernels/quant.h).
struct WeightProduct {
  const float* x = nullptr;
  int64_t m = 0;
  WeightRef w;
  float* y = nullptr;
};

// Runs every product (see the file comment for how work is split).
void WeightMatMul(std::span<const WeightProduct> products, Context& ctx);

// One product with shape checks: x [m, k], w [n, k] (F32 or quantised), y [m, n].
void WeightMatMul(CView<float> x, const Tensor& w, View<float> y, Context& ctx);

}  // namespace moe::kernels
