// The scalar reference level: the portable bodies as they are.
#include "kernels/kernels.h"
#include "kernels/kernels_generic.h"

namespace pqkit {
namespace scalar {

namespace {
// The table, filled by name. constexpr: it is built by the compiler, so no code
// of this file runs at load time.
constexpr Kernels make_table() {
    Kernels t{};
    t.dot_tile = generic::dot_tile;
    t.dot_tile_fast = generic::dot_tile;  // no faster order without SIMD
    t.dot_half = generic::dot_half;
    t.sqnorms = generic::sqnorms;
    t.l2sqr_ny = generic::l2sqr_ny;
    t.l2sqr_ny_fast = generic::l2sqr_ny;
    t.dot_ny_fast = generic::dot_ny_sqnorms;
    t.l2_to_centroids_t = generic::l2_to_centroids_t;
    t.ip_to_centroids_t = generic::ip_to_centroids_t;
    t.argmin = generic::argmin;
    t.min_max_rows = generic::min_max_rows;
    t.quantize_rows = generic::quantize_rows;
    t.scan_lut8 = generic::scan_lut8;
    t.scan_lut4 = generic::scan_lut4;
    t.keys_and_minima = generic::keys_and_minima;
    t.kth_smallest = generic::kth_smallest;
    t.sort_order = generic::sort_order;
    t.indices_at_most = generic::indices_at_most;
    t.read_bytes = generic::read_bytes;
    t.decode_sq8 = generic::decode_sq8;  // vectorised with this file's flags
    return t;
}
}  // namespace

constexpr Kernels table = make_table();

}  // namespace scalar
}  // namespace pqkit
