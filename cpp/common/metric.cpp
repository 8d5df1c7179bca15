#include "common/metric.h"

#include <stdexcept>

namespace pqkit {

Metric parse_metric(const std::string& name) {
    if (name == "l2") return Metric::L2;
    if (name == "ip") return Metric::IP;
    throw std::invalid_argument("metric must be 'l2' or 'ip' at the engine level, got '" + name + "'");
}

}  // namespace pqkit
