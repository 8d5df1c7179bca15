// The scalar reference level: the portable bodies as they are.
#include "kernels/kernels.h"
#include "kernels/kernels_generic.h"

namespace pqkit {
namespace scalar {

const Kernels table = {
    generic::dot_tile,          generic::sqnorms,           generic::l2sqr_ny,
    generic::l2_to_centroids_t, generic::ip_to_centroids_t, generic::argmin,
    generic::min_max_rows,
    generic::quantize_rows,
    generic::scan_lut8,         generic::scan_lut4,         generic::keys_and_minima,
    generic::kth_smallest,      generic::indices_at_most,   generic::read_bytes,
};

}  // namespace scalar
}  // namespace pqkit
