// Number formatting shared by the command line's text output.
#pragma once

#include <string>

namespace mb {

// `value` with exactly `digits` digits after the point: fixed(3.14159, 2) == "3.14".
std::string fixed(double value, int digits);

}  // namespace mb
