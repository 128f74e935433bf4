#!/usr/bin/env bash
# Prints the FAISS SIMD level this machine can run: avx512 when the CPU has
# every AVX-512 extension FAISS's avx512 level uses, else avx2.
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) "
for x in avx512f avx512cd avx512vl avx512dq avx512bw; do
  [[ "$flags" == *" $x "* ]] || { echo avx2; exit 0; }
done
echo avx512
