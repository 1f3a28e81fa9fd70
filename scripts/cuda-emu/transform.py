#!/usr/bin/env python3
"""CUDA source to host C++ for the emulator (shim/cuda_runtime.h, emu.cc):
  k<<<grid, block, shm, stream>>>(args);  ->  emu_launch(emu_cfg(grid, block,
      shm, stream), "k", (const void *)&k, [=]() { k(args); });
  extern __shared__ T name[];  ->  T *name = (T *)emu_dsmem;
  __shared__ T name[N], x;     ->  static T name[N]; emu_shared(&name, ...);
                                  static T x; emu_shared(&x, sizeof(x));
(one block runs at a time, so a static is the block's shared array; the
scheduler poisons it at each block's start).  Usage: transform.py FILE.cu"""
import re
import sys

src = open(sys.argv[1]).read()
s = re.sub(r"extern\s+__shared__\s+([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;",
           r"\1 *\2 = (\1 *)emu_dsmem;", src)


def shared(m):
    """__shared__ T a[N], b[M], x; (arrays or plain variables)"""
    out = []
    for d in m.group(2).split(","):
        dm = re.fullmatch(r"\s*(\w+)((?:\s*\[[^\]]+\])*)\s*", d)
        if not dm:
            sys.exit("transform: __shared__ %s: not an array or a name" % d.strip())
        out.append("static %s %s%s; emu_shared(&%s, sizeof(%s));"
                   % (m.group(1), dm.group(1), dm.group(2), dm.group(1), dm.group(1)))
    return " ".join(out)


s = re.sub(r"__shared__\s+((?:const\s+)?\w+)\s+([^;]+);", shared, s)
if "__shared__" in s:
    sys.exit("transform: a __shared__ declaration was not rewritten")


def launch(m):
    k, cfg, args = m.group(1), m.group(2), m.group(3)
    return ('emu_launch(emu_cfg(%s), "%s", (const void *)&%s, [=]() { %s(%s); });'
            % (cfg, k, k, k, args))


s, n = re.subn(r"(\w+(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\((.*?)\)\s*;", launch, s,
               flags=re.S)
if "<<<" in s or n == 0:
    sys.exit("transform: a launch was not rewritten")
sys.stdout.write('#line 1 "%s"\n' % sys.argv[1])
sys.stdout.write(s)
