// The engine's metrics. Search keys are "smaller is better": squared L2 as it
// is, the inner product negated (see topk.h). Python's metric names map onto
// these two ("cosine" is IP over L2-normalised rows, done in Python).
#pragma once

#include <string>

namespace pqkit {

enum class Metric { L2, IP };

// "l2" or "ip"; anything else throws std::invalid_argument.
Metric parse_metric(const std::string& name);

}  // namespace pqkit
