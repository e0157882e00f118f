// Human byte sizes for flags such as --memory-limit: "6GiB", "512MiB", "1.5G", "4096".
//
// Note: K, M, G, T and KiB, MiB, GiB, TiB are binary (powers of 1024), because that is what
// people mean when they size GPU memory (PyTorch and nvidia-smi print MiB/GiB). KB, MB, GB,
// TB are decimal (powers of 1000), as the SI says. Units are case-insensitive, a space may
// separate number and unit, a trailing "B" alone means bytes, and fractional results are
// rounded down to whole bytes.
#pragma once

#include <cstddef>
#include <string>

namespace mb {

// Throws mb::InvalidArgument naming the string and the accepted forms.
std::size_t parse_byte_size(const std::string& text);

}  // namespace mb
