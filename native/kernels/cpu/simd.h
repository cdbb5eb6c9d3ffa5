// Per-ISA compilation of the small hot loops (dot products, norms, softmax) without global -march
// flags: ADRANK_MULTIVERSION makes GCC/Clang emit an AVX-512, an AVX2 and a baseline clone of the
// function and pick one at load time (ifunc). The loops are written with independent lanes so the
// compiler vectorises them without -ffast-math.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ADRANK_NO_MULTIVERSION)
#define ADRANK_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ADRANK_MULTIVERSION
#endif
