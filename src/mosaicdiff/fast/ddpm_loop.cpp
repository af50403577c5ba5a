// The paper's networks' whole DDPM sampler (Threefry noise) as one AVX2 or AVX-512 loop; built
// and called by native.py.
//
// It computes what `fast.sampling._ddpm_step_counter` computes, for every step at once: each
// block of LANES samples (one per vector lane: 8 with AVX2, 16 with AVX-512) stays in registers
// and L1 from x_T to x_0, so no intermediate goes to memory, and there is one call per batch
// instead of one per step.
//
// Layout: x is (S, blocks, D, LANES): seed, block of LANES samples, the D = C H W values of a
// sample in image order, lane. Token n's value q is the image value tok[n P + q] (patchify's order).
// Noise: Threefry-2x32-20 of counters (sample index, t D/2 + j) under the seed's key, then
// Box-Muller (noise.counter_normal): the cosine normal is value j, the sine normal D/2 + j.
// Sample i of seed s has key keys[s] and index first[s] + i (noise.Counters.per_seed).
// Network (FoldedNet.eps_tokens): h = silu(x_tok W_in + bias[t]) per token, y = h W2 with
// W2 = W_out (cnn, identity) or [W_out | W_v W_out] (attn, top1). The cnn's eps is y + b_out;
// the others add the attention mixture of the values (the last P columns of y; identity: y
// itself) under logits h_n A h_m (A = W_q W_k^T / sqrt(H); identity: h_n . h_m / sqrt(H)):
// softmax weights (attn, identity) or the first largest logit's values (top1, as argmax).
// Update: x = c_x x - c_eps eps + sigma z (sampling.ddpm_tables).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>

// The shape this build computes: native.py compiles one module per (tokens, values per token,
// hidden) with -DMD_TOKENS=N -DMD_VALUES=P -DMD_HIDDEN=H.
#if !defined(MD_TOKENS) || !defined(MD_VALUES) || !defined(MD_HIDDEN)
#error "build with -DMD_TOKENS=N -DMD_VALUES=P -DMD_HIDDEN=H, as native.py does"
#endif

namespace {

// The vector width is ATen's, chosen by -DCPU_CAPABILITY_AVX512 or -DCPU_CAPABILITY_AVX2 (and
// the matching -m flags): Vec holds LANES floats, Bits as many 32-bit integers (the noise's).
using Vec = at::vec::Vectorized<float>;
constexpr int LANES = Vec::size();
#if defined(CPU_CAPABILITY_AVX512)
using Bits = __m512i;
inline Bits add(Bits a, Bits b) { return _mm512_add_epi32(a, b); }
inline Bits bit_xor(Bits a, Bits b) { return _mm512_xor_si512(a, b); }
inline Bits rotl(Bits x, int r) { return _mm512_rolv_epi32(x, _mm512_set1_epi32(r)); }
inline Bits splat(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
inline Bits lane_index() {
  return _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
}
inline Vec top24(Bits b) { return Vec(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 8))); }
#else
using Bits = __m256i;
inline Bits add(Bits a, Bits b) { return _mm256_add_epi32(a, b); }
inline Bits bit_xor(Bits a, Bits b) { return _mm256_xor_si256(a, b); }
inline Bits rotl(Bits x, int r) {
  return _mm256_or_si256(_mm256_slli_epi32(x, r), _mm256_srli_epi32(x, 32 - r));
}
inline Bits splat(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
inline Bits lane_index() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline Vec top24(Bits b) { return Vec(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 8))); }
#endif
static_assert(sizeof(Bits) == sizeof(float) * LANES, "Bits and Vec must hold as many lanes");

constexpr int ROTATIONS[8] = {13, 15, 26, 6, 17, 29, 16, 24};
constexpr int GROUP = 4;  // counters hashed together: four independent chains keep the ALUs busy

// Threefry-2x32-20 of GROUP counter pairs (c0 per lane, c1[g] for every lane) under key ks.
inline void threefry(const uint32_t ks[3], Bits c0, const uint32_t* c1, Bits* x0, Bits* x1) {
  for (int g = 0; g < GROUP; ++g) {
    x0[g] = add(c0, splat(ks[0]));
    x1[g] = splat(c1[g] + ks[1]);
  }
#pragma GCC unroll 20
  for (int r = 0; r < 20; ++r) {
    for (int g = 0; g < GROUP; ++g) {
      x0[g] = add(x0[g], x1[g]);
      x1[g] = bit_xor(rotl(x1[g], ROTATIONS[r % 8]), x0[g]);
    }
    if (r % 4 == 3) {  // key injection every 4 rounds
      const uint32_t i = (r + 1) / 4;
      for (int g = 0; g < GROUP; ++g) {
        x0[g] = add(x0[g], splat(ks[i % 3]));
        x1[g] = add(x1[g], splat(ks[(i + 1) % 3] + i));
      }
    }
  }
}

// u = (bits >> 8) / 2^24 in [0, 1), as noise._uniform.
inline Vec uniform(Bits bits) { return top24(bits) * Vec(1.0f / 16777216.0f); }

// silu(v) = v / (1 + exp(-v)), with ATen's inline exp_u20 (20 ulp), as Inductor's kernels: with
// Sleef's out-of-line exp the cnn's loop took 288 instead of 242 ns per sample-step.
inline Vec silu(Vec v) { return v / (Vec(1.0f) + v.neg().exp_u20()); }

enum Arch { CNN = 0, ATTN = 1, IDENTITY = 2, TOP1 = 3 };  // native.ARCHS, in order

struct Args {
  float* x;
  const float *w_in, *bias, *w2, *a, *b_out, *coef;
  const int32_t *tok, *keys, *first;  // keys (S, 2), first (S,)
  int64_t seeds, blocks, t_first, n_steps;
  float scale;
};

// z (D values) of step t for the lanes' sample indices.
template <int D>
inline void noise(const uint32_t key[3], Bits index, int64_t t, Vec* z) {
  constexpr int PAIRS = D / 2;
  static_assert(PAIRS % GROUP == 0, "unsupported shape");
  for (int j0 = 0; j0 < PAIRS; j0 += GROUP) {
    uint32_t c1[GROUP];
    for (int g = 0; g < GROUP; ++g) c1[g] = static_cast<uint32_t>(t * PAIRS + j0 + g);
    Bits b0[GROUP], b1[GROUP];
    threefry(key, index, c1, b0, b1);
    for (int g = 0; g < GROUP; ++g) {
      const Vec r = (Vec(-2.0f) * (Vec(1.0f) - uniform(b0[g])).log()).sqrt();
      const Vec theta = Vec(static_cast<float>(2 * M_PI)) * uniform(b1[g]);
      z[j0 + g] = r * theta.cos();
      z[PAIRS + j0 + g] = r * theta.sin();
    }
  }
}

// out[c] = init[c] + sum_k in[k] w[k, c] for c < C (w row-major, K x C), four columns at a time:
// independent FMA chains.
template <int K, int C>
inline void matvec(const Vec* in, const float* w, const float* init, Vec* out) {
  static_assert(C % 4 == 0, "unsupported shape");
  for (int c = 0; c < C; c += 4) {
    Vec acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = init ? Vec(init[c + i]) : Vec(0.0f);
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < 4; ++i) acc[i] = at::vec::fmadd(in[k], Vec(w[k * C + c + i]), acc[i]);
    for (int i = 0; i < 4; ++i) out[c + i] = acc[i];
  }
}

// The hidden tokens h (silu of x_tok W_in + bias) of token values xt.
template <int P, int H>
inline void hidden(const Vec* xt, const float* w1, const float* bias, Vec* h) {
  matvec<P, H>(xt, w1, bias, h);
  for (int j = 0; j < H; ++j) h[j] = silu(h[j]);
}

inline Vec dot(const Vec* u, const Vec* v, int n) {
  Vec acc(0.0f);
  for (int j = 0; j < n; ++j) acc = at::vec::fmadd(u[j], v[j], acc);
  return acc;
}

// eps (N x P) of the attention architectures, from token values xt (N x P).
template <int ARCH, int N, int P, int H>
inline void attention_eps(const Args& a, int64_t seed, const float* bias, const Vec (*xt)[P],
                          Vec (*eps)[P]) {
  constexpr int Y = ARCH == IDENTITY ? P : 2 * P, VALUES = ARCH == IDENTITY ? 0 : P;
  const float* w1 = a.w_in + seed * P * H;
  Vec h[N][H], y[N][Y];
  for (int n = 0; n < N; ++n) {
    hidden<P, H>(xt[n], w1, bias, h[n]);
    matvec<H, Y>(h[n], a.w2 + seed * H * Y, nullptr, y[n]);
  }
  const float* bo = a.b_out + seed * P;
  for (int n = 0; n < N; ++n) {
    Vec ha[H], logit[N], mixed[P];
    if constexpr (ARCH == IDENTITY) {
      for (int j = 0; j < H; ++j) ha[j] = h[n][j] * Vec(a.scale);
    } else {
      matvec<H, H>(h[n], a.a + seed * H * H, nullptr, ha);
    }
    for (int m = 0; m < N; ++m) logit[m] = dot(ha, h[m], H);
    if constexpr (ARCH == TOP1) {  // argmax: the first largest logit wins
      Vec best = logit[0];
      for (int q = 0; q < P; ++q) mixed[q] = y[0][VALUES + q];
      for (int m = 1; m < N; ++m) {
        const Vec wins = logit[m] > best;
        best = Vec::blendv(best, logit[m], wins);
        for (int q = 0; q < P; ++q) mixed[q] = Vec::blendv(mixed[q], y[m][VALUES + q], wins);
      }
    } else {  // softmax over the N logits
      Vec top = logit[0], sum(0.0f);
      for (int m = 1; m < N; ++m) top = at::vec::maximum(top, logit[m]);
      for (int m = 0; m < N; ++m) sum = sum + (logit[m] = (logit[m] - top).exp());
      for (int q = 0; q < P; ++q) mixed[q] = Vec(0.0f);
      for (int m = 0; m < N; ++m) {
        const Vec weight = logit[m] / sum;
        for (int q = 0; q < P; ++q) mixed[q] = at::vec::fmadd(weight, y[m][VALUES + q], mixed[q]);
      }
    }
    for (int q = 0; q < P; ++q) eps[n][q] = y[n][q] + mixed[q] + Vec(bo[q]);
  }
}

template <int ARCH, int N, int P, int H>
void sample_block(const Args& a, int64_t seed, int64_t block) {
  constexpr int D = N * P;
  static_assert(P % 4 == 0 && H % 4 == 0, "unsupported shape");
  Vec xs[D], z[D];
  float* xb = a.x + (seed * a.blocks + block) * D * LANES;
  for (int v = 0; v < D; ++v) xs[v] = Vec::loadu(xb + v * LANES);
  const uint32_t k0 = static_cast<uint32_t>(a.keys[2 * seed]);
  const uint32_t k1 = static_cast<uint32_t>(a.keys[2 * seed + 1]);
  const uint32_t key[3] = {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu};  // Threefry's key schedule
  const Bits index = add(splat(static_cast<uint32_t>(a.first[seed] + block * LANES)),
                         lane_index());
  for (int64_t k = 0; k < a.n_steps; ++k) {
    const int64_t t = a.t_first - k;
    const float* bias = a.bias + (t * a.seeds + seed) * H;
    const Vec cx(a.coef[3 * t]), ce(a.coef[3 * t + 1]), sg(a.coef[3 * t + 2]);
    noise<D>(key, index, t, z);
    Vec xt[N][P], eps[N][P];
    for (int n = 0; n < N; ++n)
      for (int q = 0; q < P; ++q) xt[n][q] = xs[a.tok[n * P + q]];
    if constexpr (ARCH == CNN) {  // token by token: h stays in registers
      for (int n = 0; n < N; ++n) {
        Vec h[H];
        hidden<P, H>(xt[n], a.w_in + seed * P * H, bias, h);
        matvec<H, P>(h, a.w2 + seed * H * P, a.b_out + seed * P, eps[n]);
      }
    } else {
      attention_eps<ARCH, N, P, H>(a, seed, bias, xt, eps);
    }
    for (int n = 0; n < N; ++n)
      for (int q = 0; q < P; ++q) {
        const int32_t v = a.tok[n * P + q];
        xs[v] = cx * xs[v] - ce * eps[n][q] + sg * z[v];
      }
  }
  for (int v = 0; v < D; ++v) xs[v].store(xb + v * LANES);
}

template <int ARCH>
void run(const Args& a) {
  at::parallel_for(0, a.seeds * a.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      sample_block<ARCH, MD_TOKENS, MD_VALUES, MD_HIDDEN>(a, i / a.blocks, i % a.blocks);
    }
  });
}

}  // namespace

// Built for one shape, MD_TOKENS tokens x MD_VALUES values x MD_HIDDEN hidden.
void ddpm_loop(torch::Tensor x, int64_t arch, torch::Tensor w_in, torch::Tensor bias,
               torch::Tensor w2, torch::Tensor a, double scale, torch::Tensor b_out,
               torch::Tensor coef, torch::Tensor tok, torch::Tensor keys, torch::Tensor first,
               int64_t t_first, int64_t n_steps) {
  const int64_t N = tok.size(0) / w_in.size(1), P = w_in.size(1), H = w_in.size(2);
  TORCH_CHECK(N == MD_TOKENS && P == MD_VALUES && H == MD_HIDDEN, "this ddpm_loop is built for ",
              MD_TOKENS, " tokens x ", MD_VALUES, " values x ", MD_HIDDEN, " hidden, not ", N,
              " x ", P, " x ", H);
  TORCH_CHECK(x.is_contiguous() && x.size(2) == N * P && x.size(3) == LANES, "bad x layout");
  TORCH_CHECK(arch >= CNN && arch <= TOP1, "bad arch code ", arch);
  TORCH_CHECK(keys.is_contiguous() && keys.numel() == 2 * x.size(0) &&
                  first.is_contiguous() && first.numel() == x.size(0),
              "keys must be (S, 2) and first (S,)");
  const Args args{x.data_ptr<float>(), w_in.data_ptr<float>(), bias.data_ptr<float>(),
                  w2.data_ptr<float>(), a.data_ptr<float>(), b_out.data_ptr<float>(),
                  coef.data_ptr<float>(), tok.data_ptr<int32_t>(), keys.data_ptr<int32_t>(),
                  first.data_ptr<int32_t>(), x.size(0), x.size(1), t_first, n_steps,
                  static_cast<float>(scale)};
  pybind11::gil_scoped_release no_gil;
  switch (arch) {
    case CNN: return run<CNN>(args);
    case ATTN: return run<ATTN>(args);
    case IDENTITY: return run<IDENTITY>(args);
    default: return run<TOP1>(args);
  }
}
