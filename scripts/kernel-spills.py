#!/usr/bin/env python3
"""Checks that the CPU GEMM micro-kernels keep their accumulators in registers.

Compiles native/kernels/cpu/gemm.cc and gemm_bf16.cc to assembly with the addon's flags (g++ -O3
-fno-math-errno -ffp-contract=off, as CMakeLists.txt and binding.gyp build them) and, in every
micro-kernel (Avx2Kernel, Avx2Bf16Kernel, Avx512Kernel, Avx512Bf16Kernel, Bf16Kernel: every tile
size of their tables), finds the innermost loop that issues FMAs (vfmadd*, vdpbf16ps) and fails if
that loop touches the stack: an accumulator or a broadcast spilled to memory. No test of the
results can see this, and it cost 1.2-1.3x: GCC 12 once kept the AVX2 bf16 kernel's accumulators
in registers and also stored them to the stack on every pair of k (docs/cpu-bf16.md).

    python3 scripts/kernel-spills.py        (CXX picks the compiler; default g++)

GCC only: the names and the loop shapes are GCC's. With another compiler it says so and exits 0.
Exit status 1 when a kernel's inner loop touches the stack or no kernel was found.
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["native/kernels/cpu/gemm.cc", "native/kernels/cpu/gemm_bf16.cc"]
KERNEL = re.compile(r"^(_ZN6adrank3cpu12_GLOBAL__N_1\d+(?:Avx2Kernel|Avx2Bf16Kernel|Avx512Kernel|Avx512Bf16Kernel|Bf16Kernel)I\S*):")
FMA = re.compile(r"\b(vfmadd\w+|vdpbf16ps)\b")
STACK = re.compile(r"\(%rsp\)")
LABEL = re.compile(r"^(\.L\w+):")
JUMP = re.compile(r"^\s+j\w+\s+(\.L\w+)")


def innermost_fma_loop(body):
    """The shortest backward-jump range of `body` (its lines) that holds an FMA: (lines, fma, stack)."""
    labels = {}
    for i, line in enumerate(body):
        m = LABEL.match(line)
        if m:
            labels[m.group(1)] = i
    best = None
    for i, line in enumerate(body):
        m = JUMP.match(line)
        if not m or labels.get(m.group(1), i + 1) > i:
            continue
        loop = body[labels[m.group(1)] : i + 1]
        fmas = sum(1 for s in loop if FMA.search(s))
        if fmas and (best is None or len(loop) < best[0]):
            best = (len(loop), fmas, sum(1 for s in loop if STACK.search(s)))
    return best


def main():
    cxx = os.environ.get("CXX", "g++")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    if "GCC" not in version and "g++" not in version.split("\n")[0]:
        print(f"kernel-spills: skipped, {cxx} is not GCC (the check reads GCC's assembly)")
        return 0
    failures, kernels = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in SOURCES:
            asm = os.path.join(tmp, os.path.basename(src) + ".s")
            subprocess.run([cxx, "-std=c++17", "-O3", "-fno-math-errno", "-ffp-contract=off", "-I", os.path.join(ROOT, "native"),
                            "-S", os.path.join(ROOT, src), "-o", asm], check=True)
            name, body, funcs = None, [], {}
            for line in open(asm):
                m = KERNEL.match(line)
                if m:
                    name, body = m.group(1), []
                    funcs[name] = body
                elif line.startswith(".LFE"):
                    name = None
                elif name:
                    body.append(line.rstrip("\n"))
            for fn, body in funcs.items():
                loop = innermost_fma_loop(body)
                if loop is None:
                    continue
                kernels += 1
                if loop[2]:
                    demangled = subprocess.run(["c++filt", fn], capture_output=True, text=True).stdout.strip() or fn
                    failures.append(f"{demangled}: {loop[2]} stack accesses in its inner loop ({loop[1]} FMAs, {loop[0]} lines)")
    for f in failures:
        print("kernel-spills: FAIL", f)
    if kernels == 0:
        print("kernel-spills: FAIL no micro-kernel found in the assembly (renamed?)")
        return 1
    print(f"kernel-spills: {kernels} micro-kernel instances, {len(failures)} with stack accesses in the inner FMA loop")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
