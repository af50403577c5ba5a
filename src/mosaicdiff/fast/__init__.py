"""Fast paths that compute the same maths as the readable reference code, only faster.

- `train_step.CompiledStep`: the whole training step as one compiled function
  (`training.train` picks it for long runs); on a GPU, `train_step.EpochGraph` replays an
  epoch of those steps as one CUDA graph.
- `folding.FoldedNet`: exact algebraic folding of the score networks for sampling;
  `sampling.fast_ddpm_sample` / `sampling.FastDDPM`: a DDPM loop over it equal to
  `sampling.ddpm_sample`.
- `inductor.configure_inductor`: the compiler settings both compiled paths need (ATen's random
  numbers, an inductor cache of each process's own, an allocator that keeps freed memory).
- `native`: DDPM for the paper's four networks as one hand-vectorised C++ loop (x86, AVX2 or
  AVX-512), which `sampling.FastDDPM` uses where it compiles and the loop builds.
"""
