// Number formatting for text output.
#include "tools/format.h"

#include <iomanip>
#include <sstream>

namespace mb {

std::string fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

}  // namespace mb
