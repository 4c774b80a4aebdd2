// Timestep and noise-level (sigma) grids of the samplers, computed the way diffusers computes
// them (NumPy float64, with float32 where diffusers' arrays are float32), so that imagegen's
// samplers step through the same grid to the last bit where the platform's libm allows.
//
// sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t) is the noise level of timestep t in the
// variance-exploding parametrisation of Karras et al. 2022 (section 2, "EDM").
//
// Plain functions of their arguments: thread-safe.
#ifndef IMAGEGEN_CORE_MATH_SIGMAS_H_
#define IMAGEGEN_CORE_MATH_SIGMAS_H_

#include <vector>

namespace imagegen {

// numpy.linspace(start, stop, num): start + i * ((stop - start) / (num - 1)), the last value
// exactly `stop`. REQUIRES: num >= 1.
std::vector<double> Linspace(double start, double stop, int num);

// numpy.arange(start, stop, step) for a floating step: start + i * delta with
// delta = (start + step) - start, ceil((stop - start) / step) values. REQUIRES: step != 0.
std::vector<double> Arange(double start, double stop, double step);

// numpy.round: half to even.
double RoundHalfEven(double x);

// numpy.interp(x, arange(len(fp)), fp) in float64: piecewise linear between integer knots,
// clamped to fp's ends. REQUIRES: !fp.empty().
std::vector<double> InterpolateAtTimesteps(const std::vector<double>& x, const std::vector<float>& fp);

// The Karras et al. 2022 noise levels (eq. 5, rho = 7) from sigma_max down to sigma_min in
// `num` steps, in float64 as diffusers' `_convert_to_karras`. REQUIRES: num >= 1, 0 < sigma_min.
std::vector<double> KarrasSigmas(double sigma_min, double sigma_max, int num);

// log(x) as NumPy computes np.log of a float32 array on x86-64 with AVX2 or AVX-512F: its own
// rational approximation (P5/Q5 with fused multiply-adds, NumPy's simd_log_FLOAT), which differs
// from libm's correctly rounded logf in the last bit for about one value in five. diffusers takes
// log sigma this way before it interpolates Karras timesteps. Zero, negative, subnormal and
// non-finite inputs go to libm.
float NumpyLogF32(float x);

// The fractional training timestep whose noise level is `sigma`: linear interpolation in
// log sigma between the two neighbouring training timesteps (diffusers' `_sigma_to_t`, with its
// NumPy 1.x float32 intermediates). `log_sigmas` holds log sigma_t for t = 0 .. N - 1, ascending.
// REQUIRES: log_sigmas.size() >= 2.
double SigmaToTimestep(double sigma, const std::vector<float>& log_sigmas);

}  // namespace imagegen

#endif  // IMAGEGEN_CORE_MATH_SIGMAS_H_
