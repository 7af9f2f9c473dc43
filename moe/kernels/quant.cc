// Quantised formats: type table, row sizes, Dequantize, Q8_0/Q4_0 Quantize (K-quants in
// quant_kquants.cc), the 8-bit activation quantiser and the QuantMatMul driver.
#include "moe/kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/core/error.h"
#include "moe/core/tensor.h"
#include "moe/kernels/isa/quant_ops.h"

namespace moe::kernels {

// Defined in quant_kquants.cc.
void QuantizeQ4K(const float* x, uint8_t* y, int64_t nb);
void QuantizeQ5K(const float* x, uint8_t* y, int64_t nb);
void QuantizeQ6K(const float* x, uint8_t* y, int64_t nb);

namespace {

constexpr QuantTypeInfo Info(std::string_view name, int ggml_type, DType dtype) {
  return {name, DTypeBlockValues(dtype), DTypeBlockBytes(dtype), ggml_type, dtype};
}

constexpr QuantTypeInfo kInfo[kNumQuantTypes] = {
    Info("Q8_0", 8, DType::kQ8_0),  Info("Q4_0", 2, DType::kQ4_0),  Info("Q4_K", 12, DType::kQ4_K),
    Info("Q5_K", 13, DType::kQ5_K), Info("Q6_K", 14, DType::kQ6_K),
};

int Index(QuantType t) {
  const int i = static_cast<int>(t);
  MOE_CHECK(i >= 0 && i < kNumQuantTypes, "quant", "unknown quant type {}", i);
  return i;
}

// Round half to even for |v| < 2^22 (the default rounding mode), without SSE4.1's roundss.
inline float RoundEven(float v) { return (v + 0x1.8p23f) - 0x1.8p23f; }

// ---- dequantisation (ggml's float expressions, in ggml's order) ---------------------------------

void DequantQ8_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += qk::kQ8_0Bytes, y += 32) {
    const float d = LoadF16(src);
    const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
    for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(qs[i]) * d;
  }
}

void DequantQ4_0(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += qk::kQ4_0Bytes, y += 32) {
    const float d = LoadF16(src);
    const uint8_t* qs = src + 2;
    for (int i = 0; i < 16; ++i) {
      y[i] = static_cast<float>((qs[i] & 0xF) - 8) * d;
      y[i + 16] = static_cast<float>((qs[i] >> 4) - 8) * d;
    }
  }
}

// Q4_K and Q5_K (qh == nullptr for Q4_K).
void DequantQ45K(const uint8_t* src, int64_t block_bytes, bool has_qh, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += block_bytes) {
    const float d = LoadF16(src), dmin = LoadF16(src + 2);
    const uint8_t* scales = src + 4;
    const uint8_t* qh = has_qh ? src + 16 : nullptr;
    const uint8_t* qs = src + (has_qh ? 48 : 16);
    for (int c = 0; c < 4; ++c, qs += 32) {
      int sc, m;
      ScaleMinK4(2 * c, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
      ScaleMinK4(2 * c + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const int hi = qh ? ((qh[l] >> (2 * c)) & 1) << 4 : 0;
        *y++ = d1 * static_cast<float>((qs[l] & 0xF) + hi) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const int hi = qh ? ((qh[l] >> (2 * c + 1)) & 1) << 4 : 0;
        *y++ = d2 * static_cast<float>((qs[l] >> 4) + hi) - m2;
      }
    }
  }
}

void DequantQ6K(const uint8_t* src, float* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, src += qk::kQ6_KBytes) {
    const float d = LoadF16(src + 208);
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8, y += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

// ---- Q8_0 / Q4_0 quantisation ----------------------------------------------------------------

// d = amax / 127 rounded to f16; q = round(x / d) with the f16 scale the reader will use.
void QuantizeQ8_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 32, y += qk::kQ8_0Bytes) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const uint16_t dh = ToF16(amax / 127.0f);
    std::memcpy(y, &dh, 2);
    const float d = FromF16(dh);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; ++i) {
      const float q = std::clamp(RoundEven(x[i] * id), -127.0f, 127.0f);
      y[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

// ggml's rule: d = -max / 8 where max is the value of largest magnitude (so it maps to q = 0, the
// full -8 end of the range), q = clamp(round(x / d) + 8, 0, 15).
void QuantizeQ4_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 32, y += qk::kQ4_0Bytes) {
    float amax = 0, max = 0;
    for (int i = 0; i < 32; ++i) {
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        max = x[i];
      }
    }
    const uint16_t dh = ToF16(max / -8.0f);
    std::memcpy(y, &dh, 2);
    const float d = FromF16(dh);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < 16; ++i) {
      const int q0 = static_cast<int>(std::clamp(RoundEven(x[i] * id) + 8.0f, 0.0f, 15.0f));
      const int q1 = static_cast<int>(std::clamp(RoundEven(x[i + 16] * id) + 8.0f, 0.0f, 15.0f));
      y[2 + i] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

int64_t CheckedBlocks(QuantType t, int64_t n) {
  const QuantTypeInfo& info = QuantInfo(t);
  MOE_CHECK(n >= 0 && n % info.block_size == 0, "quant",
            "{} rows hold multiples of {} values; got n={}", info.name, info.block_size, n);
  return n / info.block_size;
}

}  // namespace

const QuantTypeInfo& QuantInfo(QuantType t) { return kInfo[Index(t)]; }
std::string_view QuantTypeName(QuantType t) { return QuantInfo(t).name; }
int64_t QuantBlockSize(QuantType t) { return QuantInfo(t).block_size; }
int64_t QuantBlockBytes(QuantType t) { return QuantInfo(t).block_bytes; }

QuantType QuantTypeFromGgml(int ggml_type) {
  for (QuantType t : kAllQuantTypes)
    if (QuantInfo(t).ggml_type == ggml_type) return t;
  Fail("quant", "ggml type {} is not one of Q8_0 (8), Q4_0 (2), Q4_K (12), Q5_K (13), Q6_K (14)",
       ggml_type);
}

DType ToDType(QuantType t) { return QuantInfo(t).dtype; }

QuantType QuantTypeOf(DType t) {
  for (QuantType q : kAllQuantTypes)
    if (QuantInfo(q).dtype == t) return q;
  Fail("quant", "{} is not a block-quantised type", DTypeName(t));
}

int64_t QuantRowBytes(QuantType t, int64_t n) { return CheckedBlocks(t, n) * QuantBlockBytes(t); }

int64_t QuantMatrixBytes(QuantType t, int64_t rows, int64_t n) {
  MOE_CHECK(rows >= 0, "quant", "{} matrix with rows={}", QuantTypeName(t), rows);
  const int64_t row = QuantRowBytes(t, n);
  MOE_CHECK(row == 0 || rows <= static_cast<int64_t>(kMaxAllocBytes) / row, "quant",
            "{} matrix [{}, {}] is too large", QuantTypeName(t), rows, n);
  return rows * row;
}

void Dequantize(QuantType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = CheckedBlocks(t, n);
  if (nb == 0) return;
  MOE_CHECK(src != nullptr && dst != nullptr, "quant", "Dequantize {} of n={} with a null pointer",
            QuantTypeName(t), n);
  const auto* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case QuantType::kQ8_0: return DequantQ8_0(s, dst, nb);
    case QuantType::kQ4_0: return DequantQ4_0(s, dst, nb);
    case QuantType::kQ4_K: return DequantQ45K(s, qk::kQ4_KBytes, false, dst, nb);
    case QuantType::kQ5_K: return DequantQ45K(s, qk::kQ5_KBytes, true, dst, nb);
    case QuantType::kQ6_K: return DequantQ6K(s, dst, nb);
  }
}

void Quantize(QuantType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = CheckedBlocks(t, n);
  if (nb == 0) return;
  MOE_CHECK(src != nullptr && dst != nullptr, "quant", "Quantize {} of n={} with a null pointer",
            QuantTypeName(t), n);
  auto* d = static_cast<uint8_t*>(dst);
  switch (t) {
    case QuantType::kQ8_0: return QuantizeQ8_0(src, d, nb);
    case QuantType::kQ4_0: return QuantizeQ4_0(src, d, nb);
    case QuantType::kQ4_K: return QuantizeQ4K(src, d, nb);
    case QuantType::kQ5_K: return QuantizeQ5K(src, d, nb);
    case QuantType::kQ6_K: return QuantizeQ6K(src, d, nb);
  }
}

// ---- activations ---------------------------------------------------------------------------------

QuantActsBuffer::~QuantActsBuffer() { AlignedFree(data_); }

QuantActs& QuantActsBuffer::Reset(int64_t m, int64_t k, int block, ActLayout layout) {
  QuantActs& a = acts_;
  a.k = k;
  a.block = block;
  a.layout = layout;
  // 32-blocks: pad to whole groups of 16 blocks, which the SIMD kernels reduce together.
  a.k_padded = block == 32 ? (k + 511) / 512 * 512 : k;
  a.blocks = a.k_padded / block;
  const int64_t sums_bytes = block == 32 ? 4 * a.blocks : 2 * (k / 16);
  a.row_bytes = (a.k_padded + 4 * a.blocks + sums_bytes + 63) / 64 * 64;
  const int64_t dt_bytes = block == 256 ? (m + 7) / 8 * a.blocks * 8 * 4 : 0;
  const size_t need = static_cast<size_t>(std::max<int64_t>(1, m * a.row_bytes + dt_bytes));
  if (need > capacity_) {
    AlignedFree(data_);
    data_ = nullptr;
    capacity_ = 0;
    data_ = AlignedAlloc(need);
    capacity_ = need;
  }
  a.base = static_cast<uint8_t*>(data_);
  a.dt = block == 256 ? reinterpret_cast<float*>(a.base + m * a.row_bytes) : nullptr;
  if (dt_bytes > 0) std::memset(a.dt, 0, static_cast<size_t>(dt_bytes));
  return a;
}

void QuantizeActsScalar(const float* x, int64_t row_begin, int64_t row_end, const QuantActs& a) {
  const int block = a.block;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* xr = x + i * a.k;
    uint8_t* row = a.base + i * a.row_bytes;
    std::memset(row, 0, static_cast<size_t>(a.row_bytes));  // padding blocks stay 0
    auto* qs = reinterpret_cast<int8_t*>(row);
    auto* d = reinterpret_cast<float*>(row + a.k_padded);
    auto* sums32 = reinterpret_cast<int32_t*>(row + a.k_padded + 4 * a.blocks);
    auto* sums16 = reinterpret_cast<int16_t*>(row + a.k_padded + 4 * a.blocks);
    int8_t q[256];
    for (int64_t b = 0; b < a.k / block; ++b) {
      const float* xb = xr + b * block;
      float amax = 0;
      for (int t = 0; t < block; ++t) amax = std::max(amax, std::fabs(xb[t]));
      // Blocks below kMinActAmax (where 127 / amax would overflow) quantise to 0.
      const float id = amax >= kMinActAmax ? 127.0f / amax : 0.0f;
      d[b] = amax >= kMinActAmax ? amax / 127.0f : 0.0f;
      if (block == 256) a.dt[(i / 8 * a.blocks + b) * 8 + i % 8] = d[b];
      for (int t = 0; t < block; ++t)
        q[t] = static_cast<int8_t>(std::clamp(RoundEven(xb[t] * id), -127.0f, 127.0f));
      int total = 0;
      for (int c = 0; c < block / 16; ++c) {
        std::memcpy(qs + ActChunkPos(a.layout, b * block + 16 * c), q + 16 * c, 16);
        int sum = 0;
        for (int t = 0; t < 16; ++t) sum += q[16 * c + t];
        if (block == 256) sums16[b * 16 + c] = static_cast<int16_t>(sum);
        total += sum;
      }
      if (block == 32) sums32[b] = total;
    }
  }
}

// ---- tables and the driver ------------------------------------------------------------------------

std::vector<const QuantOps*> AvailableQuantOps() {
  std::vector<const QuantOps*> v{&ScalarQuantOps()};
  const Isa isa = ActiveIsa();
  if (isa >= Isa::kAvx2) v.push_back(&Avx2QuantOps());
  if (isa >= Isa::kAvx512) {
    v.push_back(&Avx512QuantOps());
    if (GetCpuFeatures().avx512vnni) v.push_back(&Avx512VnniQuantOps());
  }
  return v;
}

const QuantOps& ActiveQuantOps() {
  static const QuantOps& ops = *AvailableQuantOps().back();
  return ops;
}

void QuantMatMulWith(const QuantOps& ops, QuantType t, const void* w, int64_t n, int64_t k,
                     const float* x, int64_t m, float* y, Context& ctx) {
  const std::string_view name = QuantTypeName(t);
  MOE_CHECK(n >= 0 && m >= 0, "quant", "QuantMatMul {} with n={} (weight rows) and m={} (x rows)",
            name, n, m);
  const int64_t row_bytes = QuantRowBytes(t, k);  // names k when it is not whole blocks
  if (n == 0 || m == 0) return;
  MOE_CHECK(y != nullptr, "quant", "QuantMatMul {}: y is null", name);
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  MOE_CHECK(w != nullptr && x != nullptr, "quant", "QuantMatMul {}: null w or x (n={}, k={}, m={})",
            name, n, k, m);
  QuantMatrixBytes(t, n, k);  // size sanity

  QuantActsBuffer buffer;
  const int block = static_cast<int>(QuantBlockSize(t));
  const QuantActs& acts = buffer.Reset(m, k, block, ops.layout[static_cast<int>(t)]);
  ParallelForRange(m, ctx, [&](int64_t b, int64_t e, int) { ops.quantize_acts(x, b, e, acts); }, 16);

  const auto* wb = static_cast<const uint8_t*>(w);
  ParallelForRange(n, ctx, [&](int64_t b, int64_t e, int) {
    QuantDotRows(ops, t, wb, row_bytes, b, e, acts, m, y, n);
  }, 4);
}

void QuantDotRows(const QuantOps& ops, QuantType t, const uint8_t* w, int64_t row_bytes,
                  int64_t j_begin, int64_t j_end, const QuantActs& acts, int64_t m, float* y,
                  int64_t ldy) {
  // Weight rows in tiles of about 256 KiB, which stay in L2 while every group of 8 x rows passes
  // over them (for m <= 8 there is one group, and each weight row is read exactly once).
  const int64_t tile = std::max<int64_t>(1, (int64_t{256} << 10) / row_bytes);
  const QuantDotFn dot = ops.dot[static_cast<int>(t)];
  for (int64_t j0 = j_begin; j0 < j_end; j0 += tile) {
    const int64_t rows = std::min(tile, j_end - j0);
    for (int64_t i0 = 0; i0 < m; i0 += kQuantMaxM) {
      const int mi = static_cast<int>(std::min<int64_t>(kQuantMaxM, m - i0));
      dot(w + j0 * row_bytes, row_bytes, rows, acts, i0, mi, y + i0 * ldy + j0, ldy);
    }
  }
}

void QuantMatMul(QuantType t, const void* w, int64_t n, int64_t k, const float* x, int64_t m,
                 float* y, Context& ctx) {
  QuantMatMulWith(ActiveQuantOps(), t, w, n, k, x, m, y, ctx);
}

}  // namespace moe::kernels
