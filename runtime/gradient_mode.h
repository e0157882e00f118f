// Whether a backward pass or an accumulation kernel overwrites its destination or adds to
// it. An explicit parameter everywhere, never a hidden beta.
#pragma once

namespace mb {

enum class GradientMode { Overwrite, Accumulate };

}  // namespace mb
