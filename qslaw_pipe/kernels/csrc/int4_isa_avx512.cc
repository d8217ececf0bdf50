// The int4 kernels compiled for avx512 (kernels/build.py gives this file its own -m flags).
#include <utility>

#include "simd_avx512.h"
#define QSLAW_ISA_OBJECT kIsaAvx512
#include "int4_kernels.inc"
