// The int4 kernels compiled for avx2 (kernels/build.py gives this file its own -m flags).
#include <utility>

#include "simd_avx2.h"
#define QSLAW_ISA_OBJECT kIsaAvx2
#include "int4_kernels.inc"
