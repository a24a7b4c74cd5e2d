#!/usr/bin/env python3
"""Import cycles between the modules of each crate (crates/*/src), crate roots excluded:
a module that names another through crate::/super:: (comments and test modules aside) is
an edge. Prints each cycle and exits 1 when there is one."""
import os,re,sys
root=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'crates')
total=0
for crate in sorted(os.listdir(root)):
    src=os.path.join(root,crate,'src')
    if not os.path.isdir(src): continue
    mods={}
    for dp,dn,fn in os.walk(src):
        for f in fn:
            if not f.endswith('.rs'): continue
            p=os.path.join(dp,f)
            rel=os.path.relpath(p,src)[:-3]
            parts=rel.split(os.sep)
            if parts[-1]=='mod': parts=parts[:-1]
            if parts in (['lib'],['main']): continue
            mods['::'.join(parts)]=p
    names=set(mods)
    g={m:set() for m in names}
    for m,p in mods.items():
        text=open(p).read()
        text=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*','',text,flags=re.S)
        text=re.sub(r'//[^\n]*','',text)
        for n in names:
            if n==m or n.startswith(m+'::') or m.startswith(n+'::'): continue
            top=n.split('::')[0]
            pat=r'crate::'+re.escape(n)+r'\b'
            if re.search(pat,text): g[m].add(n)
            # use crate::{a, b}
            for grp in re.findall(r'use crate::\{([^}]*)\}',text):
                if re.search(r'\b'+re.escape(n)+r'\b',grp): g[m].add(n)
            # super::x for sibling
            par='::'.join(m.split('::')[:-1])
            sib=(par+'::' if par else '')
            if n.startswith(sib) and '::' not in n[len(sib):]:
                if re.search(r'super::'+re.escape(n[len(sib):])+r'\b',text): g[m].add(n)
    # find cycles via DFS
    seen=set(); stack=[]; onst=set(); cycles=[]
    def dfs(u):
        seen.add(u); stack.append(u); onst.add(u)
        for v in sorted(g[u]):
            if v in onst: cycles.append(stack[stack.index(v):]+[v])
            elif v not in seen: dfs(v)
        stack.pop(); onst.discard(u)
    for u in sorted(g):
        if u not in seen: dfs(u)
    for c in cycles:
        total+=1
        print(crate, ' -> '.join(c))
print(f'{total} module import cycles')
sys.exit(1 if total else 0)
