#!/usr/bin/env python3
"""CUDA source to host C++ for the emulator (shim/cuda_runtime.h): launches
become emu_launch calls, __shared__ arrays statics (one block runs at a
time), the dynamic shared array the emulator's buffer."""
import re
import sys

s = open(sys.argv[1]).read()
s = s.replace("extern __shared__ float smem[];", "float *smem = emu_smem;")
s = s.replace("__shared__", "static")
s, n = re.subn(r"(\w+)<<<(.*?)>>>\((.*?)\);",
               lambda m: "emu_launch(emu_cfg(%s), [=]() { %s(%s); });"
               % (m.group(2), m.group(1), m.group(3)), s, flags=re.S)
if "<<<" in s or n == 0:
    sys.exit("transform: a launch was not rewritten")
sys.stdout.write(s)
