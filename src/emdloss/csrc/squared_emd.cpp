// Fused CPU kernel for the squared EMD (squared L2 distance of CDFs) of logits against class
// indices: one pass per row computes the softmax, the CDF scan, the loss and the analytic
// gradient, which the forward keeps so that the backward is a single scale.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

#if defined(__AVX512F__)
constexpr int kBytes = 64;
#else
constexpr int kBytes = 32;
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
inline typename Vec<T>::type splat(T v) {
  typename Vec<T>::type r;
  for (int i = 0; i < lanes<T>(); ++i) r[i] = v;
  return r;
}

template <typename T>
inline typename Vec<T>::type load(const T* p, int n, T fill) {
  typename Vec<T>::type r;
  if (n == lanes<T>()) {
    std::memcpy(&r, p, sizeof(r));
  } else {
    r = splat<T>(fill);
    for (int i = 0; i < n; ++i) r[i] = p[i];
  }
  return r;
}

template <typename T>
inline void store(T* p, typename Vec<T>::type v, int n) {
  if (n == lanes<T>()) {
    std::memcpy(p, &v, sizeof(v));
  } else {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
}

// Inclusive prefix sum inside one vector: log2(W) shift-and-add steps, with compile-time
// shuffle masks (index W selects a zero lane).
template <typename V, typename I, int W, int K>
struct ScanStep {
  static inline V apply(V v) {
    const I mask = make_mask();
    v += __builtin_shuffle(v, V{}, mask);
    return ScanStep<V, I, W, 2 * K>::apply(v);
  }
  static inline I make_mask() {
    I m{};
    for (int i = 0; i < W; ++i) m[i] = i >= K ? i - K : W;
    return m;
  }
};
template <typename V, typename I, int W>
struct ScanStep<V, I, W, W> {
  static inline V apply(V v) { return v; }
};

template <typename T>
inline typename Vec<T>::type scan(typename Vec<T>::type v) {
  return ScanStep<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), 1>::apply(v);
}

// Horizontal sum and max by halving (log2(W) dependent steps instead of W - 1).
template <typename V, typename I, int W, int H>
struct Fold {
  static inline I mask() {
    I m{};
    for (int i = 0; i < W; ++i) m[i] = (i + H) % W;
    return m;
  }
  static inline V sum(V v) { return Fold<V, I, W, H / 2>::sum(v + __builtin_shuffle(v, mask())); }
  static inline V max(V v) {
    V u = __builtin_shuffle(v, mask());
    return Fold<V, I, W, H / 2>::max(u > v ? u : v);
  }
};
template <typename V, typename I, int W>
struct Fold<V, I, W, 0> {
  static inline V sum(V v) { return v; }
  static inline V max(V v) { return v; }
};

template <typename T>
inline T hsum(typename Vec<T>::type v) {
  return Fold<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), lanes<T>() / 2>::sum(v)[0];
}

template <typename T>
inline T hmax(typename Vec<T>::type v) {
  return Fold<typename Vec<T>::type, typename Vec<T>::itype, lanes<T>(), lanes<T>() / 2>::max(v)[0];
}

// exp(x) for x <= 0 (a shifted logit). Float: Cody-Waite reduction and a degree-6 polynomial
// (Cephes expf, ~1 ulp); exactly 0 below the float range, NaN stays NaN. Double: libm.
inline Vec<float>::type vexp(Vec<float>::type x) {
  typedef Vec<float>::type V;
  typedef Vec<float>::itype I;
  const V lo = splat<float>(-87.33654f);
  V under = (V)(x < lo);  // all-ones bits where exp underflows
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
  return under != splat<float>(0.0f) ? splat<float>(0.0f) : y;
}

inline Vec<double>::type vexp(Vec<double>::type x) {
  for (int i = 0; i < lanes<double>(); ++i) x[i] = std::exp(x[i]);
  return x;
}

template <typename T>
struct Iota {
  static const typename Vec<T>::type value;
};
template <typename T>
const typename Vec<T>::type Iota<T>::value = [] {
  typename Vec<T>::type v;
  for (int i = 0; i < lanes<T>(); ++i) v[i] = T(i);
  return v;
}();

// One row of C logits z (contiguous), target class y, row factor `coef` (weight * scale /
// denominator), gaps g (only read when kGaps; else all ones). Writes d(coef * loss)/dz to
// grad and returns the loss; xs is scratch of C rounded up to a whole vector. Full vectors in the
// main loops, one zero-padded tail vector.
template <typename T, bool kGaps>
T row_kernel(const T* z, int64_t C, int64_t y, T coef, const T* g, T* grad, T* xs) {
  typedef typename Vec<T>::type V;
  constexpr int W = lanes<T>();
  const T ninf = -std::numeric_limits<T>::infinity();
  const V iota = Iota<T>::value;
  const int64_t full = C - C % W;
  const int tail = static_cast<int>(C - full);
  // 1. max (NaN logits need no test: exp(NaN - m) is NaN and poisons the whole row)
  V vm = splat<T>(ninf);
  for (int64_t j = 0; j < full; j += W) {
    V v = load<T>(z + j, W, ninf);
    vm = v > vm ? v : vm;
  }
  if (tail) {
    V v = load<T>(z + full, tail, ninf);
    vm = v > vm ? v : vm;
  }
  const T m = hmax<T>(vm);
  // 2. e = exp(z - m) into grad, s = sum e
  V vs = splat<T>(T(0));
  const V vmv = splat<T>(m);
  for (int64_t j = 0; j < full; j += W) {
    V e = vexp(load<T>(z + j, W, ninf) - vmv);
    store<T>(grad + j, e, W);
    vs += e;
  }
  if (tail) {
    V e = vexp(load<T>(z + full, tail, ninf) - vmv);  // padded lanes: exp(-inf) = 0
    store<T>(grad + full, e, tail);
    vs += e;
  }
  const V vinv = splat<T>(T(1) / hsum<T>(vs));
  const V vy = splat<T>(static_cast<T>(y));
  const V one = splat<T>(T(1)), zero = splat<T>(T(0));
  const V tail_ones = iota < splat<T>(static_cast<T>(tail)) ? one : zero;  // valid tail lanes
  // 3. D = P - T, E = g D; loss = sum E D, A = sum E P, tot = sum E; X (the exclusive prefix
  // sum of E) into the scratch row xs
  V vloss = zero, vA = zero, vtot = zero;
  T cp = 0, cx = 0;
  auto pass3 = [&](int64_t j, int n) {
    V p = load<T>(grad + j, n, T(0)) * vinv;
    V ps = scan<T>(p);
    V P = ps + splat<T>(cp);
    cp += ps[W - 1];
    V D = P - (iota + splat<T>(static_cast<T>(j)) >= vy ? one : zero);
    V E = D;
    if (kGaps)
      E = load<T>(g + j, n, T(0)) * D;
    else if (n < W)
      E = tail_ones * D;
    V es = scan<T>(E);
    store<T>(xs + j, es - E + splat<T>(cx), W);
    cx += es[W - 1];
    vloss += E * D;
    vA += E * P;
    vtot += E;
  };
  for (int64_t j = 0; j < full; j += W) pass3(j, W);
  if (tail) pass3(full, tail);
  // 4. grad_j = 2 coef p_j (B - X_j) with B = tot - A
  const V vB = splat<T>(hsum<T>(vtot) - hsum<T>(vA));
  const V c2 = splat<T>(T(2) * coef);
  auto pass4 = [&](int64_t j, int n) {
    V p = load<T>(grad + j, n, T(0)) * vinv;
    store<T>(grad + j, c2 * p * (vB - load<T>(xs + j, W, T(0))), n);
  };
  for (int64_t j = 0; j < full; j += W) pass4(j, W);
  if (tail) pass4(full, tail);
  return hsum<T>(vloss);
}

template <typename T>
T row_kernel(const T* z, int64_t C, int64_t y, T coef, const T* g, T* grad, T* xs) {
  return g ? row_kernel<T, true>(z, C, y, coef, g, grad, xs)
           : row_kernel<T, false>(z, C, y, coef, g, grad, xs);
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
    scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* gr = grad.data_ptr<scalar_t>();
    scalar_t* lp = rows.data_ptr<scalar_t>();
    // as ATen: about 32768 elements per task, so small batches stay on one thread
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(C, 1));
    at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
      // scratch for X (whole vectors), and for S > 1 contiguous copies of the strided row
      std::vector<scalar_t> xs(C + 64), zb, gb;
      if (S > 1) {
        zb.resize(C);
        gb.resize(C);
      }
      for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / S, s = r % S;
        const int64_t y = tp[r];
        scalar_t* gout = gr + n * C * S + s;
        if (y == ignore_index) {
          for (int64_t k = 0; k < C; ++k) gout[k * S] = 0;
          lp[r] = 0;
          continue;
        }
        const scalar_t wy = w ? w[y] : scalar_t(1);
        const scalar_t coef = static_cast<scalar_t>(wy * base);
        if (S == 1) {
          lp[r] = wy * row_kernel<scalar_t>(xp + n * C, C, y, coef, g, gout, xs.data());
        } else {
          const scalar_t* zin = xp + n * C * S + s;
          for (int64_t k = 0; k < C; ++k) zb[k] = zin[k * S];
          lp[r] = wy * row_kernel<scalar_t>(zb.data(), C, y, coef, g, gb.data(), xs.data());
          for (int64_t k = 0; k < C; ++k) gout[k * S] = gb[k];
        }
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

class SquaredEmdFunction : public torch::autograd::Function<SquaredEmdFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& target, const c10::optional<at::Tensor>& gaps,
                            const c10::optional<at::Tensor>& weight, int64_t ignore_index,
                            double scale, int64_t reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, grad] = forward_impl(x, target, gaps, weight, ignore_index, scale, reduction);
    ctx->save_for_backward({grad});
    ctx->saved_data["reduction"] = reduction;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor grad = ctx->get_saved_variables()[0];
    const at::Tensor& go = grad_outputs[0];
    at::Tensor gx;
    if (ctx->saved_data["reduction"].toInt() == kNone) {
      gx = grad * go.unsqueeze(1);  // (N, C, S) * (N, 1, S)
    } else {
      gx = grad * go;
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
