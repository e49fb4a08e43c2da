// One AdamW step over embtune's flat parameter buffer through ATen's fused kernel
// (at::_fused_adamw_, aten/src/ATen/native/FusedAdam.cpp on CPU, fused_adamw_impl.cu on
// CUDA): one pass reading parameter, gradient and both moments and writing them back,
// instead of a dozen whole-buffer passes of separate tensor ops. tch does not expose the
// op (its list arguments are in-place), so it is called here. The update is
// torch.optim.AdamW's (torch/optim/adamw.py): p *= 1 - lr*wd; m = lerp(m, g, 1 - b1);
// v = b2*v + (1 - b2)*g*g; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), with g divided by
// `grad_scale` first when given (gradient clipping without a pass of its own) and nothing
// touched when `found_inf` is 1. Every C++ exception stays on this side of the C boundary.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <vector>

// Tensors arrive as at::Tensor* (tch's C_tensor). `ranges` holds `n_ranges` (offset,
// length) pairs of the flat buffers that this call updates with `weight_decay`. `step` is
// the 1-based step count t of the bias corrections. `grad_scale` and `found_inf` may be
// null; else 0-d float tensors on the buffers' device. Returns 0, or 1 with the message in
// `err`.
extern "C" int embtune_fused_adamw(const at::Tensor* param, const at::Tensor* grad,
                                   const at::Tensor* exp_avg, const at::Tensor* exp_avg_sq,
                                   const int64_t* ranges, size_t n_ranges, double step,
                                   double lr, double beta1, double beta2, double weight_decay,
                                   double eps, const at::Tensor* grad_scale,
                                   const at::Tensor* found_inf, char* err, size_t err_len) {
  try {
    std::vector<at::Tensor> p, g, m, v, steps;
    p.reserve(n_ranges);
    g.reserve(n_ranges);
    m.reserve(n_ranges);
    v.reserve(n_ranges);
    at::Tensor t = at::full({}, step, param->options().dtype(at::kFloat));
    for (size_t i = 0; i < n_ranges; ++i) {
      const int64_t off = ranges[2 * i], len = ranges[2 * i + 1];
      p.push_back(param->narrow(0, off, len));
      g.push_back(grad->narrow(0, off, len));
      m.push_back(exp_avg->narrow(0, off, len));
      v.push_back(exp_avg_sq->narrow(0, off, len));
      steps.push_back(t);
    }
    std::optional<at::Tensor> scale, inf;
    if (grad_scale != nullptr) scale = *grad_scale;
    if (found_inf != nullptr) inf = *found_inf;
    c10::AutoGradMode no_grad(false);
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, scale, inf);
    return 0;
  } catch (const c10::Error& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what_without_backtrace());
  } catch (const std::exception& e) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", e.what());
  } catch (...) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "unknown C++ exception");
  }
  return 1;
}
