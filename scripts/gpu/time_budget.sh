# Time budgets of the GPU scripts (scripts/gpu/gpu-build.sh, scripts/gpu_check.sh), sourced by
# both. The caller sets DEADLINE (epoch seconds by which the whole run must end).

now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
# budget CAP [RESERVE]: seconds for a step: CAP, or fewer so that RESERVE seconds stay for the
# steps after it (a RESERVE over half of the time left counts as half, so that every step gets a
# share); never below 0.
budget() {
  local c=$1 r=${2:-0} l
  l=$(left)
  ((r > l / 2)) && r=$((l / 2))
  l=$((l - r))
  ((l < c)) && c=$l
  ((c < 0)) && c=0
  echo "$c"
}
