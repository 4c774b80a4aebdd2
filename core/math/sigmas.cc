#include "core/math/sigmas.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace imagegen {

std::vector<double> Linspace(double start, double stop, int num) {
  std::vector<double> y(num);
  if (num == 1) {
    y[0] = start;
    return y;
  }
  const double div = num - 1;
  const double delta = stop - start;
  const double step = delta / div;
  for (int i = 0; i < num; ++i) {
    // NumPy multiplies by the step, or divides then scales when the step underflows to zero.
    y[i] = (step == 0 ? (i / div) * delta : i * step) + start;
  }
  y[num - 1] = stop;
  return y;
}

std::vector<double> Arange(double start, double stop, double step) {
  const double length = std::ceil((stop - start) / step);
  std::vector<double> y;
  if (!(length > 0)) return y;
  y.resize(static_cast<size_t>(length));
  y[0] = start;
  const double delta = (start + step) - start;
  for (size_t i = 1; i < y.size(); ++i) y[i] = start + static_cast<double>(i) * delta;
  return y;
}

double RoundHalfEven(double x) { return std::nearbyint(x); }  // default rounding mode: to even

std::vector<double> InterpolateAtTimesteps(const std::vector<double>& x, const std::vector<float>& fp) {
  const int64_t n = static_cast<int64_t>(fp.size());
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (v <= 0) {
      out[i] = fp[0];
    } else if (v >= static_cast<double>(n - 1)) {
      out[i] = fp[n - 1];
    } else {
      const int64_t j = static_cast<int64_t>(std::floor(v));
      if (static_cast<double>(j) == v) {
        out[i] = fp[j];
      } else {
        // NumPy: slope * (x - xp[j]) + fp[j], with the knots one apart.
        const double slope = (static_cast<double>(fp[j + 1]) - static_cast<double>(fp[j])) / 1.0;
        out[i] = slope * (v - static_cast<double>(j)) + static_cast<double>(fp[j]);
      }
    }
  }
  return out;
}

float NumpyLogF32(float x) {
  if (!(x >= std::numeric_limits<float>::min()) || !std::isfinite(x)) return std::log(x);
  // x = m * 2^e with m in [0.5, 1); then m in (sqrt(1/2), sqrt(2)] by moving a factor 2.
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  const uint32_t mantissa_bits = (bits & 0x7fffffu) | (126u << 23);
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof(m));
  if (m <= 0.707106781186547524400844362104849039f) {
    m = m + m;
    e = e - 1.0f;
  }
  m = m - 1.0f;
  // log(1 + m) = P(m) / Q(m), NumPy's NPY_COEFF_{P,Q}{0..5}_LOGf, Horner with FMA.
  float num = std::fma(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
  num = std::fma(num, m, 1.480000633576506585156e+00f);
  num = std::fma(num, m, 2.112677543073053063722e+00f);
  num = std::fma(num, m, 9.999999999999998702752e-01f);
  num = std::fma(num, m, 0.0f);
  float den = std::fma(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
  den = std::fma(den, m, 9.864942958519418960339e-01f);
  den = std::fma(den, m, 2.453006071784736363091e+00f);
  den = std::fma(den, m, 2.612677543073109236779e+00f);
  den = std::fma(den, m, 1.0f);
  return std::fma(e, 0.693147180559945309417232121458176568f, num / den);
}

std::vector<double> KarrasSigmas(double sigma_min, double sigma_max, int num) {
  constexpr double kRho = 7.0;  // Karras et al. 2022, eq. 5
  const std::vector<double> ramp = Linspace(0.0, 1.0, num);
  const double min_inv_rho = std::pow(sigma_min, 1.0 / kRho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / kRho);
  std::vector<double> sigmas(num);
  for (int i = 0; i < num; ++i) {
    sigmas[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), kRho);
  }
  return sigmas;
}

double SigmaToTimestep(double sigma, const std::vector<float>& log_sigmas) {
  const int64_t n = static_cast<int64_t>(log_sigmas.size());
  // diffusers computes log sigma in float64, then NumPy 1.x casts it to the float32 of
  // log_sigmas for every array operation (value-based casting of a scalar).
  const float log_sigma = static_cast<float>(std::log(std::max(sigma, 1e-10)));
  // The last training timestep whose log sigma is <= log_sigma (0 if none), at most n - 2.
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (log_sigma - log_sigmas[i] >= 0.0f) low = i;
  }
  low = std::min(low, n - 2);
  const int64_t high = low + 1;
  float w = (log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]);
  w = std::clamp(w, 0.0f, 1.0f);
  // float32 weights times the int64 indices: NumPy promotes to float64.
  return static_cast<double>(1.0f - w) * static_cast<double>(low) +
         static_cast<double>(w) * static_cast<double>(high);
}

}  // namespace imagegen
