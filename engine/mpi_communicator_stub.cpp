// A build without MPI (CMake found no libopenmpi-dev): one process only.
#include "engine/mpi_communicator.h"
#include "runtime/error.h"

namespace mb {

bool mpi_available() {
  return false;
}

std::shared_ptr<Communicator> make_mpi_communicator() {
  MB_THROW(InvalidArgument,
           "microbatch was built without MPI. Fix: install libopenmpi-dev and rebuild "
           "(tools/setup.sh)");
}

}  // namespace mb
