#!/usr/bin/env python3
# topk-sim.py - a line-by-line simulation of libcore/cuda/kernels-sample.cu's
# selection (subsets, rounds, warp rescans, index arithmetic) against a sort,
# for checking the kernel's logic without a GPU.  Needs numpy.
import numpy as np, random
B=256
def before(av,ai,bv,bi):
    if ai<0: return False
    if bi<0: return True
    return av>bv or (av==bv and ai<bi)
def key(l,scale):
    s=np.float32(l)*np.float32(scale)
    return np.float32(-np.inf) if s!=s else s
def kernel(x,scale,k):
    n=len(x)
    best=[]
    for t in range(B):
        bv,bi=0.0,-1
        for i in range(t,n,B):
            s=key(x[i],scale)
            if before(s,i,bv,bi): bv,bi=s,i
        best.append((bv,bi))
    out=[]
    for r in range(k):
        # warp reductions then warp 0 over 8 warp results
        wres=[]
        for w in range(B//32):
            v,i=0.0,-1
            for l in range(32):
                bv,bi=best[w*32+l]
                if before(bv,bi,v,i): v,i=bv,bi
            wres.append((v,i))
        v,id_=0.0,-1
        for (a,b) in wres:
            if before(a,b,v,id_): v,id_=a,b
        out.append(id_)
        if id_>=0:
            sub=id_%B
            nv,ni=0.0,-1
            for lane in range(32):
                i=sub+lane*B
                while i<n:
                    s=key(x[i],scale)
                    if before(v,id_,s,i) and before(s,i,nv,ni): nv,ni=s,i
                    i+=32*B
            best[sub]=(nv,ni)
    return out
random.seed(1)
for trial in range(40):
    n=random.choice([1,5,64,65,300,1000,9000,20000])
    shape=trial%4
    x=np.random.randn(n).astype(np.float32)
    if shape==1: x=np.floor(x*4)/4
    if shape==2: x[:]=1.25
    if shape==3: x[::3]=0.0; x[1::3]=-0.0
    x=x.astype(np.float32)
    scale=random.choice([1.0,1/0.7,20.0])
    k=min(n,random.choice([1,13,64]))
    got=kernel(x,scale,k)
    keys=[key(v,scale) for v in x]
    ref=sorted(range(n),key=lambda i:(-keys[i],i))[:k]
    assert got==ref,(n,shape,k,got[:5],ref[:5])
print("ok")
