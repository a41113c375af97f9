// Fused CPU kernel for the squared EMD (squared L2 distance of CDFs) of logits against class
// indices: one pass per row computes the softmax, the CDF scan, the loss and the analytic
// gradient, which the forward keeps so that the backward is a single scale.
//
// Speed notes (docs/benchmarks.md has the measurements): every helper is forced inline (as
// out-of-line calls the 64-byte vectors went through memory, which cost more than the maths);
// the last partial vector of a row uses masked loads and stores (AVX-512 / AVX2) instead of a
// lane-by-lane loop; several rows go through each pass together so that the dependent chains
// of one row (horizontal max and sum, the two prefix-sum carries) overlap with the others'; the
// scratch is thread-local and reused, so a call allocates only its outputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#define EMD_INLINE inline __attribute__((always_inline))

namespace {

// Vector width: the widest the target has (16 bytes where there is no AVX, e.g. plain x86-64
// or ARM NEON, so that no vector crosses a function boundary wider than the ABI allows).
#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kBytes), aligned(4)));
  typedef int32_t itype __attribute__((vector_size(kBytes)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kBytes), aligned(8)));
  typedef int64_t itype __attribute__((vector_size(kBytes)));
};

template <typename T>
constexpr int lanes() {
  return kBytes / static_cast<int>(sizeof(T));
}

template <typename T>
EMD_INLINE typename Vec<T>::type splat(T v) {
  typename Vec<T>::type r;
  for (int i = 0; i < lanes<T>(); ++i) r[i] = v;
  return r;
}

template <typename T>
EMD_INLINE typename Vec<T>::type loadu(const T* p) {
  typename Vec<T>::type r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}

template <typename T>
EMD_INLINE void storeu(T* p, typename Vec<T>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// The first n (0 < n < W) lanes from p, the others `fill`; and the matching store.
#if defined(__AVX512F__)
EMD_INLINE Vec<float>::type load_part(const float* p, int n, float fill) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  return (Vec<float>::type)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p);
}
EMD_INLINE Vec<double>::type load_part(const double* p, int n, double fill) {
  const __mmask8 m = static_cast<__mmask8>((1u << n) - 1u);
  return (Vec<double>::type)_mm512_mask_loadu_pd(_mm512_set1_pd(fill), m, p);
}
EMD_INLINE void store_part(float* p, Vec<float>::type v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), (__m512)v);
}
EMD_INLINE void store_part(double* p, Vec<double>::type v, int n) {
  _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), (__m512d)v);
}
#elif defined(__AVX2__)
EMD_INLINE __m256i mask32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
EMD_INLINE __m256i mask64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
EMD_INLINE Vec<float>::type load_part(const float* p, int n, float fill) {
  const __m256i m = mask32(n);
  return (Vec<float>::type)_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m),
                                            _mm256_castsi256_ps(m));
}
EMD_INLINE Vec<double>::type load_part(const double* p, int n, double fill) {
  const __m256i m = mask64(n);
  return (Vec<double>::type)_mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, m),
                                             _mm256_castsi256_pd(m));
}
EMD_INLINE void store_part(float* p, Vec<float>::type v, int n) {
  _mm256_maskstore_ps(p, mask32(n), (__m256)v);
}
EMD_INLINE void store_part(double* p, Vec<double>::type v, int n) {
  _mm256_maskstore_pd(p, mask64(n), (__m256d)v);
}
#else
template <typename T>
EMD_INLINE typename Vec<T>::type load_part(const T* p, int n, T fill) {
  typename Vec<T>::type r = splat<T>(fill);
  for (int i = 0; i < n; ++i) r[i] = p[i];
  return r;
}
template <typename T>
EMD_INLINE void store_part(T* p, typename Vec<T>::type v, int n) {
  for (int i = 0; i < n; ++i) p[i] = v[i];
}
#endif

// Inclusive prefix sum inside one vector: log2(W) shift-and-add steps, with compile-time
// shuffle masks (index W selects a zero lane).
template <typename V, typename I, int W, int K>
struct ScanStep {
  static EMD_INLINE V apply(V v) {
    const I mask = make_mask();
    v += __builtin_shuffle(v, V{}, mask);
    return ScanStep<V, I, W, 2 * K>::apply(v);
  }
  static EMD_INLINE I make_mask() {
    I m{};
    for (int i = 0; i < W; ++i) m[i] = i >= K ? i - K : W;
    return m;
  }
};
template <typename V, typename I, int W>
struct ScanStep<V, I, W, W> {
  static EMD_INLINE V apply(V v) { return v; }
};

template <typename T>
EMD_INLINE typename Vec<T>::type scan(typename Vec<T>::type v) {
  return ScanStep<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), 1>::apply(v);
}

// Every lane set to the last lane (the running total of a scan).
template <typename T>
EMD_INLINE typename Vec<T>::type last(typename Vec<T>::type v) {
  typename Vec<T>::itype m;
  for (int i = 0; i < lanes<T>(); ++i) m[i] = lanes<T>() - 1;
  return __builtin_shuffle(v, m);
}

// Horizontal sum and max by rotate-and-combine (log2(W) dependent steps); every lane of the
// result holds the total, so it needs no broadcast.
template <typename V, typename I, int W, int H>
struct Fold {
  static EMD_INLINE I mask() {
    I m{};
    for (int i = 0; i < W; ++i) m[i] = (i + H) % W;
    return m;
  }
  static EMD_INLINE V sum(V v) {
    return Fold<V, I, W, H / 2>::sum(v + __builtin_shuffle(v, mask()));
  }
  static EMD_INLINE V max(V v) {
    V u = __builtin_shuffle(v, mask());
    return Fold<V, I, W, H / 2>::max(u > v ? u : v);
  }
};
template <typename V, typename I, int W>
struct Fold<V, I, W, 0> {
  static EMD_INLINE V sum(V v) { return v; }
  static EMD_INLINE V max(V v) { return v; }
};

template <typename T>
EMD_INLINE typename Vec<T>::type vsum(typename Vec<T>::type v) {
  return Fold<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), lanes<T>() / 2>::sum(v);
}

template <typename T>
EMD_INLINE typename Vec<T>::type vmax(typename Vec<T>::type v) {
  return Fold<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), lanes<T>() / 2>::max(v);
}

// exp(x) for x <= 0 (a shifted logit). Float: Cody-Waite reduction and a degree-6 polynomial
// (Cephes expf, ~1 ulp); exactly 0 below the float range, NaN stays NaN. Double: libm.
EMD_INLINE Vec<float>::type vexp(Vec<float>::type x) {
  typedef Vec<float>::type V;
  typedef Vec<float>::itype I;
  const V lo = splat<float>(-87.33654f);
  const I under = x < lo;  // all-ones where exp underflows
  x = x < lo ? lo : x;
  const V magic = splat<float>(12582912.0f);  // 1.5 * 2^23: rounds to the nearest integer
  V t = x * splat<float>(1.44269504088896341f) + magic;
  V n = t - magic;
  V r = x - n * splat<float>(0.693359375f);
  r = r - n * splat<float>(-2.12194440e-4f);
  V y = splat<float>(1.9875691500e-4f);
  y = y * r + splat<float>(1.3981999507e-3f);
  y = y * r + splat<float>(8.3334519073e-3f);
  y = y * r + splat<float>(4.1665795894e-2f);
  y = y * r + splat<float>(1.6666665459e-1f);
  y = y * r + splat<float>(5.0000001201e-1f);
  y = y * (r * r) + r + splat<float>(1.0f);
  I bits;
  std::memcpy(&bits, &t, sizeof(bits));
  bits = (bits - 0x4B400000 + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  y = y * scale;
  return under ? splat<float>(0.0f) : y;
}

EMD_INLINE Vec<double>::type vexp(Vec<double>::type x) {
  for (int i = 0; i < lanes<double>(); ++i) x[i] = std::exp(x[i]);
  return x;
}

template <typename T>
EMD_INLINE typename Vec<T>::type iota() {
  typename Vec<T>::type v;
  for (int i = 0; i < lanes<T>(); ++i) v[i] = T(i);
  return v;
}

// R rows of C logits each (z[r], contiguous), target classes y[r], row factors coef[r]
// (weight * scale / denominator), gaps g (read only when kGaps, else all ones). Writes
// d(coef * loss)/dz to grad[r] and the loss to loss[r]; xs is scratch of R rows of `stride`
// (C rounded up to whole vectors) elements. The R rows go through every pass together: each
// pass is a loop over the class vectors with the rows innermost, so the compiler interleaves
// R independent dependency chains.
//
// With p the softmax, P its prefix sum, D_k = P_k - [k >= y], E = g D, X_j = sum_{k<j} E_k:
// loss = sum E D and dloss/dz_j = 2 p_j (a - X_j) with a = <p, X> = X_y - loss (see
// emdloss._ordinal), so one extra read of X replaces a third horizontal sum.
template <typename T, bool kGaps, int R>
EMD_INLINE void row_group(const T* const* z, const int64_t* y, const T* coef, const T* g,
                          T* const* grad, T* xs, int64_t stride, int64_t C, T* loss) {
  typedef typename Vec<T>::type V;
  constexpr int W = lanes<T>();
  const T ninf = -std::numeric_limits<T>::infinity();
  const int64_t full = C - C % W;
  const int tail = static_cast<int>(C - full);
  const V zero = splat<T>(T(0)), one = splat<T>(T(1));

  // 1. the max of each row (NaN logits need no test: exp(NaN - m) is NaN and poisons the row)
  V vm[R];
  for (int r = 0; r < R; ++r) vm[r] = splat<T>(ninf);
  for (int64_t j = 0; j < full; j += W) {
    for (int r = 0; r < R; ++r) {
      const V v = loadu<T>(z[r] + j);
      vm[r] = v > vm[r] ? v : vm[r];
    }
  }
  if (tail) {
    for (int r = 0; r < R; ++r) {
      const V v = load_part(z[r] + full, tail, ninf);
      vm[r] = v > vm[r] ? v : vm[r];
    }
  }
  for (int r = 0; r < R; ++r) vm[r] = vmax<T>(vm[r]);

  // 2. e = exp(z - m) into grad; s = sum e
  V vs[R];
  for (int r = 0; r < R; ++r) vs[r] = zero;
  for (int64_t j = 0; j < full; j += W) {
    for (int r = 0; r < R; ++r) {
      const V e = vexp(loadu<T>(z[r] + j) - vm[r]);
      storeu<T>(grad[r] + j, e);
      vs[r] += e;
    }
  }
  if (tail) {
    for (int r = 0; r < R; ++r) {
      const V e = vexp(load_part(z[r] + full, tail, ninf) - vm[r]);  // padding: exp(-inf) = 0
      store_part(grad[r] + full, e, tail);
      vs[r] += e;
    }
  }
  V inv[R];
  for (int r = 0; r < R; ++r) inv[r] = one / vsum<T>(vs[r]);

  // 3. P, D, E; X (the exclusive prefix sum of E) into xs; loss = sum E D
  V cp[R], cx[R], vl[R], vy[R];
  for (int r = 0; r < R; ++r) {
    cp[r] = cx[r] = vl[r] = zero;
    vy[r] = splat<T>(static_cast<T>(y[r]));
  }
  const V lane = iota<T>();
  auto pass3 = [&](int64_t j, int n) __attribute__((always_inline)) {
    const V index = lane + splat<T>(static_cast<T>(j));
    V gj = one;
    if (kGaps) gj = n == W ? loadu<T>(g + j) : load_part(g + j, n, T(0));
    for (int r = 0; r < R; ++r) {
      const V e = n == W ? loadu<T>(grad[r] + j) : load_part(grad[r] + j, n, T(0));
      const V P = scan<T>(e * inv[r]) + cp[r];
      cp[r] = last<T>(P);
      const V D = P - (index >= vy[r] ? one : zero);
      V E = D;
      if (kGaps) {
        E = gj * D;
      } else if (n < W) {
        E = index < splat<T>(static_cast<T>(C)) ? D : zero;  // padding lanes add nothing
      }
      const V es = scan<T>(E) + cx[r];
      storeu<T>(xs + r * stride + j, es - E);
      cx[r] = last<T>(es);
      vl[r] += E * D;
    }
  };
  for (int64_t j = 0; j < full; j += W) pass3(j, W);
  if (tail) pass3(full, tail);

  // 4. grad_j = 2 coef p_j (a - X_j)
  V va[R], c2[R];
  for (int r = 0; r < R; ++r) {
    loss[r] = vsum<T>(vl[r])[0];
    va[r] = splat<T>(xs[r * stride + y[r]] - loss[r]);
    c2[r] = splat<T>(T(2) * coef[r]) * inv[r];
  }
  for (int64_t j = 0; j < full; j += W) {
    for (int r = 0; r < R; ++r) {
      const V e = loadu<T>(grad[r] + j);
      storeu<T>(grad[r] + j, c2[r] * e * (va[r] - loadu<T>(xs + r * stride + j)));
    }
  }
  if (tail) {
    for (int r = 0; r < R; ++r) {
      const V e = load_part(grad[r] + full, tail, T(0));
      store_part(grad[r] + full, c2[r] * e * (va[r] - loadu<T>(xs + r * stride + full)), tail);
    }
  }
}

// Rows in flight: enough to hide the latency of one row's dependent steps, few enough that the
// accumulators stay in the 32 vector registers.
constexpr int kRows = 4;

template <typename T>
struct Scratch {
  std::vector<T> xs, zb, gb;
};

template <typename T>
Scratch<T>& scratch() {
  thread_local Scratch<T> s;  // reused across calls: no allocation after the first
  return s;
}

template <typename T, bool kGaps>
void run_rows(int64_t begin, int64_t end, const T* xp, const int64_t* tp, const T* w, const T* g,
              T base, int64_t C, int64_t S, int64_t ignore_index, T* gr, T* lp) {
  constexpr int W = lanes<T>();
  const int64_t stride = (C + W - 1) / W * W;
  Scratch<T>& s = scratch<T>();
  if (static_cast<int64_t>(s.xs.size()) < kRows * stride) s.xs.resize(kRows * stride);
  if (S > 1 && static_cast<int64_t>(s.zb.size()) < kRows * C) {
    s.zb.resize(kRows * C);
    s.gb.resize(kRows * C);
  }
  const T* z[kRows];
  T* gout[kRows];
  int64_t ys[kRows], rows[kRows];
  T coef[kRows], loss[kRows];
  int k = 0;
  // Runs the gathered rows (kRows of them, or the last few one by one) and writes back.
  auto flush = [&](bool all) {
    if (k == kRows) {
      row_group<T, kGaps, kRows>(z, ys, coef, g, gout, s.xs.data(), stride, C, loss);
    } else if (all) {
      for (int i = 0; i < k; ++i) {
        row_group<T, kGaps, 1>(z + i, ys + i, coef + i, g, gout + i, s.xs.data(), stride, C,
                               loss + i);
      }
    } else {
      return;
    }
    for (int i = 0; i < k; ++i) {
      const int64_t r = rows[i];
      lp[r] = (w ? w[ys[i]] : T(1)) * loss[i];
      if (S > 1) {
        T* out = gr + (r / S) * C * S + r % S;
        for (int64_t c = 0; c < C; ++c) out[c * S] = gout[i][c];
      }
    }
    k = 0;
  };
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / S, sp = r % S;
    const int64_t y = tp[r];
    if (y == ignore_index) {
      T* out = gr + n * C * S + sp;
      for (int64_t c = 0; c < C; ++c) out[c * S] = 0;
      lp[r] = 0;
      continue;
    }
    if (S == 1) {
      z[k] = xp + n * C;
      gout[k] = gr + n * C;
    } else {
      T* zb = s.zb.data() + k * C;
      const T* zin = xp + n * C * S + sp;
      for (int64_t c = 0; c < C; ++c) zb[c] = zin[c * S];
      z[k] = zb;
      gout[k] = s.gb.data() + k * C;
    }
    ys[k] = y;
    rows[k] = r;
    coef[k] = (w ? w[y] : T(1)) * base;
    ++k;
    flush(false);
  }
  flush(true);
}

enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// x: (N, C, S) contiguous float/double; target: (N, S) int64 contiguous.
// Returns (out, grad) with out the reduced loss (0-dim) or (N, S) rows for kNone, and grad the
// gradient of out (for kNone: of each row's entry) with respect to x.
std::tuple<at::Tensor, at::Tensor> forward_impl(const at::Tensor& x_in, const at::Tensor& target_in,
                                                const c10::optional<at::Tensor>& gaps_in,
                                                const c10::optional<at::Tensor>& weight_in,
                                                int64_t ignore_index, double scale,
                                                int64_t reduction) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 3, "emdloss_cpu: x must be (N, C, S) on CPU");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "emdloss_cpu: x must be float32 or float64");
  TORCH_CHECK(target_in.scalar_type() == at::kLong && target_in.dim() == 2 &&
                  target_in.size(0) == x_in.size(0) && target_in.size(1) == x_in.size(2),
              "emdloss_cpu: target must be int64 of shape (N, S)");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2), R = N * S;
  at::Tensor grad = at::empty_like(x);
  at::Tensor rows = at::empty({N, S}, x.options());
  const int64_t* tp = target.data_ptr<int64_t>();

  // Validate indices (free here, in the same process) and find the mean's denominator.
  at::Tensor rw;  // per-row weight, incl. ignore
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "emdloss_cpu_squared_emd", [&] {
    at::Tensor wt, gp;
    const scalar_t* w = nullptr;
    const scalar_t* g = nullptr;
    if (weight_in.has_value() && weight_in->defined()) {
      wt = weight_in->to(x.scalar_type()).contiguous();
      TORCH_CHECK(wt.numel() == C, "emdloss_cpu: weight must have C entries");
      w = wt.data_ptr<scalar_t>();
    }
    if (gaps_in.has_value() && gaps_in->defined()) {
      gp = gaps_in->to(x.scalar_type()).contiguous();
      TORCH_CHECK(gp.numel() == C, "emdloss_cpu: gaps must have C entries");
      g = gp.data_ptr<scalar_t>();
    }
    double denom = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t y = tp[r];
      if (y == ignore_index) continue;
      TORCH_CHECK_VALUE(y >= 0 && y < C, "target holds class index ", y, " at flat position ", r,
                        ", expected an index in [0, ", C, ") or ignore_index=", ignore_index);
      denom += w ? static_cast<double>(w[y]) : 1.0;
    }
    const double base = reduction == kMean ? scale / denom : scale;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* gr = grad.data_ptr<scalar_t>();
    scalar_t* lp = rows.data_ptr<scalar_t>();
    // as ATen: about 32768 elements per task, so small batches stay on one thread
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C, 1));
    at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
      if (g) {
        run_rows<scalar_t, true>(begin, end, xp, tp, w, g, static_cast<scalar_t>(base), C, S,
                                 ignore_index, gr, lp);
      } else {
        run_rows<scalar_t, false>(begin, end, xp, tp, w, g, static_cast<scalar_t>(base), C, S,
                                  ignore_index, gr, lp);
      }
    });
    if (reduction != kNone) {
      double total = 0;
      for (int64_t r = 0; r < R; ++r) total += static_cast<double>(lp[r]);
      rw = at::scalar_tensor(total * base, x.options());
    } else {
      rw = rows.mul_(scale);
    }
  });
  return {rw, grad};
}

at::Tensor squared_emd_cpu(const at::Tensor& x, const at::Tensor& target,
                           const c10::optional<at::Tensor>& gaps,
                           const c10::optional<at::Tensor>& weight, int64_t ignore_index,
                           double scale, int64_t reduction) {
  return std::get<0>(forward_impl(x, target, gaps, weight, ignore_index, scale, reduction));
}

// The same loss in differentiable ATen ops, for create_graph=True only: the first-order backward
// scales a gradient kept from the forward, which carries no history, so a second-order gradient
// differentiates this instead (exact, and slow only where it is asked for).
at::Tensor reference_loss(const at::Tensor& x, const at::Tensor& target, const at::Tensor& gaps,
                          const at::Tensor& weight, int64_t ignore_index, double scale,
                          int64_t reduction) {
  const int64_t C = x.size(1);
  const at::Tensor valid = target.ne(ignore_index);
  const at::Tensor t = at::where(valid, target, at::zeros_like(target));
  const at::Tensor cdf = at::softmax(x, 1).cumsum(1);
  const at::Tensor step =
      at::arange(C, target.options()).view({1, C, 1}).ge(t.unsqueeze(1)).to(x.scalar_type());
  at::Tensor terms = (cdf - step).square();
  if (gaps.defined()) terms = terms * gaps.to(x.scalar_type()).view({1, C, 1});
  at::Tensor rw = valid.to(x.scalar_type());
  if (weight.defined()) {
    rw = rw * weight.to(x.scalar_type()).index_select(0, t.reshape(-1)).view_as(t);
  }
  const at::Tensor rows = terms.sum(1) * rw * scale;
  if (reduction == kNone) return rows;
  return reduction == kMean ? rows.sum() / rw.sum() : rows.sum();
}

class SquaredEmdFunction : public torch::autograd::Function<SquaredEmdFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& target, const c10::optional<at::Tensor>& gaps,
                            const c10::optional<at::Tensor>& weight, int64_t ignore_index,
                            double scale, int64_t reduction) {
    at::Tensor out, grad;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(out, grad) = forward_impl(x, target, gaps, weight, ignore_index, scale, reduction);
    }
    // x, target, gaps and weight are kept (not copied) for an exact create_graph=True backward.
    ctx->save_for_backward(
        {grad, x, target, gaps.value_or(at::Tensor()), weight.value_or(at::Tensor())});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& go = grad_outputs[0];
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    at::Tensor gx;
    if (at::GradMode::is_enabled()) {  // create_graph=True
      const at::Tensor& x = saved[1];
      const at::Tensor loss =
          reference_loss(x, saved[2], saved[3], saved[4], ctx->saved_data["ignore_index"].toInt(),
                         ctx->saved_data["scale"].toDouble(), reduction);
      gx = torch::autograd::grad({loss}, {x}, {go}, /*retain_graph=*/true,
                                 /*create_graph=*/true)[0];
    } else if (!torch::autograd::get_current_graph_task_keep_graph()) {
      // The graph is freed after this call, so nothing reads the kept gradient again: scale it in
      // place (or not at all for the usual grad_output of 1) instead of writing a new buffer,
      // which at C = 100 cost a third of the whole forward + backward (memory traffic).
      gx = saved[0];
      if (reduction == kNone) {
        gx.mul_(go.unsqueeze(1));  // (N, C, S) * (N, 1, S)
      } else if (go.requires_grad() || go.item<double>() != 1.0) {
        gx.mul_(go);
      }
    } else if (reduction == kNone) {  // retain_graph=True: the kept gradient must stay intact
      gx = saved[0] * go.unsqueeze(1);
    } else {
      gx = saved[0] * go;
    }
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor squared_emd_autograd(const at::Tensor& x, const at::Tensor& target,
                                const c10::optional<at::Tensor>& gaps,
                                const c10::optional<at::Tensor>& weight, int64_t ignore_index,
                                double scale, int64_t reduction) {
  return SquaredEmdFunction::apply(x, target, gaps, weight, ignore_index, scale, reduction);
}

}  // namespace

TORCH_LIBRARY(emdloss_cpu, m) {
  m.def(
      "squared_emd(Tensor x, Tensor target, Tensor? gaps, Tensor? weight, int ignore_index, "
      "float scale, int reduction) -> Tensor");
}

TORCH_LIBRARY_IMPL(emdloss_cpu, CPU, m) { m.impl("squared_emd", &squared_emd_cpu); }

TORCH_LIBRARY_IMPL(emdloss_cpu, Autograd, m) { m.impl("squared_emd", &squared_emd_autograd); }
