// The int4 kernels compiled for generic (kernels/build.py gives this file its own -m flags).
#include <utility>

#include "simd_generic.h"
#define QSLAW_ISA_OBJECT kIsaGeneric
#include "int4_kernels.inc"
