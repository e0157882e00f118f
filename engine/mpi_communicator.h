// The MPI communicator's factory (engine/mpi_communicator.cpp, or its stub in a build
// without MPI). Use launched_communicator() (engine/communicator.h) instead.
#pragma once

#include <memory>

#include "engine/communicator.h"

namespace mb {

// Initializes MPI (once) and returns MPI_COMM_WORLD's communicator. Throws mb::Error when
// MPI cannot start, mb::InvalidArgument in a build without MPI.
std::shared_ptr<Communicator> make_mpi_communicator();

}  // namespace mb
