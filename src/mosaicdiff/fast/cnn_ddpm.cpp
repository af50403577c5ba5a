// The cnn's whole DDPM sampler (Threefry noise) as one AVX2 loop; built and called by native.py.
//
// It computes what `fast.sampling._ddpm_step_counter` computes, for every step at once: each
// block of 8 samples (one per vector lane) stays in registers and L1 from x_T to x_0, so no
// intermediate goes to memory, and there is one call per batch instead of one per step.
//
// Layout: x is (S, blocks, D, 8): seed, block of 8 samples, the D = C H W values of a sample in
// image order, lane. Token n's value q is the image value tok[n P + q] (patchify's order).
// Noise: Threefry-2x32-20 of counters (sample index, t D/2 + j) under the key, then
// Box-Muller (noise.counter_normal): the cosine normal is value j, the sine normal D/2 + j.
// Network per token (FoldedNet.eps_tokens for the cnn): h = silu(x_tok W_in + bias[t]),
// eps = h W_out + b_out. Update: x = c_x x - c_eps eps + sigma z (sampling.ddpm_tables).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int LANES = 8;
constexpr int ROTATIONS[8] = {13, 15, 26, 6, 17, 29, 16, 24};
constexpr int GROUP = 4;  // counters hashed together: four independent chains keep the ALUs busy

inline __m256i rotl(__m256i x, int r) {
  return _mm256_or_si256(_mm256_slli_epi32(x, r), _mm256_srli_epi32(x, 32 - r));
}

inline __m256i splat(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// Threefry-2x32-20 of GROUP counter pairs (c0 per lane, c1[g] for every lane) under key ks.
inline void threefry(const uint32_t ks[3], __m256i c0, const uint32_t* c1, __m256i* x0,
                     __m256i* x1) {
  for (int g = 0; g < GROUP; ++g) {
    x0[g] = _mm256_add_epi32(c0, splat(ks[0]));
    x1[g] = splat(c1[g] + ks[1]);
  }
#pragma GCC unroll 20
  for (int r = 0; r < 20; ++r) {
    for (int g = 0; g < GROUP; ++g) {
      x0[g] = _mm256_add_epi32(x0[g], x1[g]);
      x1[g] = _mm256_xor_si256(rotl(x1[g], ROTATIONS[r % 8]), x0[g]);
    }
    if (r % 4 == 3) {  // key injection every 4 rounds
      const uint32_t i = (r + 1) / 4;
      for (int g = 0; g < GROUP; ++g) {
        x0[g] = _mm256_add_epi32(x0[g], splat(ks[i % 3]));
        x1[g] = _mm256_add_epi32(x1[g], splat(ks[(i + 1) % 3] + i));
      }
    }
  }
}

// u = (bits >> 8) / 2^24 in [0, 1), as noise._uniform.
inline Vec uniform(__m256i bits) {
  return Vec(_mm256_cvtepi32_ps(_mm256_srli_epi32(bits, 8))) * Vec(1.0f / 16777216.0f);
}

// silu(v) = v / (1 + exp(-v)); exp_u20 is ATen's inline exp (20 ulp), as Inductor uses.
inline Vec silu(Vec v) { return v / (Vec(1.0f) + v.neg().exp_u20()); }

struct Args {
  float* x;
  const float *w_in, *bias, *w_out, *b_out, *coef;
  const int32_t* tok;
  int64_t seeds, blocks, per_seed, t_first, n_steps;
  uint32_t key[3];
};

template <int N, int P, int H>
void sample_block(const Args& a, int64_t seed, int64_t block) {
  constexpr int D = N * P, PAIRS = D / 2;
  static_assert(PAIRS % GROUP == 0 && P % 4 == 0 && H % 4 == 0, "unsupported shape");
  Vec xs[D], z[D], h[H];
  float* xb = a.x + (seed * a.blocks + block) * D * LANES;
  for (int v = 0; v < D; ++v) xs[v] = Vec::loadu(xb + v * LANES);
  const float *w1 = a.w_in + seed * P * H, *w2 = a.w_out + seed * H * P, *bo = a.b_out + seed * P;
  const __m256i index = _mm256_add_epi32(splat(seed * a.per_seed + block * LANES),
                                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int64_t k = 0; k < a.n_steps; ++k) {
    const int64_t t = a.t_first - k;
    const float* bi = a.bias + (t * a.seeds + seed) * H;
    const Vec cx(a.coef[3 * t]), ce(a.coef[3 * t + 1]), sg(a.coef[3 * t + 2]);
    for (int j0 = 0; j0 < PAIRS; j0 += GROUP) {  // the noise z in image order
      uint32_t c1[GROUP];
      for (int g = 0; g < GROUP; ++g) c1[g] = static_cast<uint32_t>(t * PAIRS + j0 + g);
      __m256i b0[GROUP], b1[GROUP];
      threefry(a.key, index, c1, b0, b1);
      for (int g = 0; g < GROUP; ++g) {
        const Vec r = (Vec(-2.0f) * (Vec(1.0f) - uniform(b0[g])).log()).sqrt();
        const Vec theta = Vec(static_cast<float>(2 * M_PI)) * uniform(b1[g]);
        z[j0 + g] = r * theta.cos();
        z[PAIRS + j0 + g] = r * theta.sin();
      }
    }
    for (int n = 0; n < N; ++n) {  // tokens are independent: update each as it is done
      const int32_t* tk = a.tok + n * P;
      Vec xt[P];
      for (int q = 0; q < P; ++q) xt[q] = xs[tk[q]];
      for (int j = 0; j < H; j += 4) {  // four hidden units at a time: independent FMA chains
        Vec acc[4] = {Vec(bi[j]), Vec(bi[j + 1]), Vec(bi[j + 2]), Vec(bi[j + 3])};
        for (int q = 0; q < P; ++q)
          for (int i = 0; i < 4; ++i) acc[i] = at::vec::fmadd(xt[q], Vec(w1[q * H + j + i]), acc[i]);
        for (int i = 0; i < 4; ++i) h[j + i] = silu(acc[i]);
      }
      for (int q = 0; q < P; q += 4) {
        Vec eps[4] = {Vec(bo[q]), Vec(bo[q + 1]), Vec(bo[q + 2]), Vec(bo[q + 3])};
        for (int j = 0; j < H; ++j)
          for (int i = 0; i < 4; ++i) eps[i] = at::vec::fmadd(h[j], Vec(w2[j * P + q + i]), eps[i]);
        for (int i = 0; i < 4; ++i) {
          const int32_t v = tk[q + i];
          xs[v] = cx * xs[v] - ce * eps[i] + sg * z[v];
        }
      }
    }
  }
  for (int v = 0; v < D; ++v) xs[v].store(xb + v * LANES);
}

}  // namespace

// Shapes (tokens N, token values P, hidden H) with a compiled instance; native.SHAPES lists them.
void cnn_ddpm(torch::Tensor x, torch::Tensor w_in, torch::Tensor bias, torch::Tensor w_out,
              torch::Tensor b_out, torch::Tensor coef, torch::Tensor tok, int64_t key0,
              int64_t key1, int64_t t_first, int64_t n_steps, int64_t per_seed) {
  const int64_t N = tok.size(0) / w_in.size(1), P = w_in.size(1), H = w_in.size(2);
  TORCH_CHECK(N == 4 && P == 12 && H == 32, "cnn_ddpm is built for 4 tokens x 12 values x 32 "
              "hidden, not ", N, " x ", P, " x ", H);
  TORCH_CHECK(x.is_contiguous() && x.size(2) == N * P && x.size(3) == LANES, "bad x layout");
  const uint32_t k0 = static_cast<uint32_t>(key0), k1 = static_cast<uint32_t>(key1);
  Args a{x.data_ptr<float>(), w_in.data_ptr<float>(), bias.data_ptr<float>(),
         w_out.data_ptr<float>(), b_out.data_ptr<float>(), coef.data_ptr<float>(),
         tok.data_ptr<int32_t>(), x.size(0), x.size(1), per_seed, t_first, n_steps,
         {k0, k1, k0 ^ k1 ^ 0x1BD11BDAu}};
  pybind11::gil_scoped_release no_gil;
  at::parallel_for(0, a.seeds * a.blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) sample_block<4, 12, 32>(a, i / a.blocks, i % a.blocks);
  });
}
