// The device-independent half of zcfast::jacob_cov_score (see csrc/common/jacob_cov_finish.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace zcfast {

// z: [M, N, D] float64, each row centred and scaled to unit L2 norm (a row of NaN where the
// Jacobian row had zero or non-finite variance). Returns (scores [M], eigenvalues [M, N]) in
// out_dtype; see the op's documentation in zcfast/ops.py.
std::tuple<at::Tensor, at::Tensor> jacob_cov_finish(const at::Tensor& z, double k,
                                                    at::ScalarType out_dtype);

}  // namespace zcfast
