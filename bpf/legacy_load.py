#!/usr/bin/env python3
"""Load a BPF object with legacy SEC("maps") map definitions (struct
bpf_map_def: type, key_size, value_size, max_entries, map_flags; 20 bytes
each) through raw bpf(2) calls, since libbpf >= 1.0 (and so bpftool) refuses
such objects. Creates the maps, patches every map relocation into an
ld_imm64 with src_reg = BPF_PSEUDO_MAP_FD, loads each program of the given
section through the kernel verifier (log printed on failure) and optionally
times it with BPF_PROG_TEST_RUN. x86-64 only (syscall number 321).

Usage: legacy_load.py OBJ [--section xdp] [--data PKT] [--repeat N]
Exit status 0 if every program loaded (and ran)."""
import argparse, ctypes, os, struct, sys

SYS_BPF = 321
BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_PROG_TEST_RUN = 0, 5, 10
PROG_TYPES = {"xdp": 6, "tc": 3, "socket": 1}
libc = ctypes.CDLL(None, use_errno=True)

def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    r = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r, buf.raw

def elf_sections(b):
    if b[:4] != b"\x7fELF" or b[4] != 2 or b[5] != 1:
        raise SystemExit("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3a)
    secs = []
    for i in range(shnum):
        name, typ, flags, addr, off, size, link, info, align, entsize = \
            struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize)
        secs.append(dict(name=name, type=typ, off=off, size=size, link=link, info=info, entsize=entsize))
    stro = secs[shstrndx]["off"]
    for s in secs:
        s["name"] = b[stro + s["name"]:b.index(b"\0", stro + s["name"])].decode()
    return secs

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("obj")
    ap.add_argument("--section", default="xdp")
    ap.add_argument("--data")
    ap.add_argument("--repeat", type=int, default=1000)
    a = ap.parse_args()
    b = open(a.obj, "rb").read()
    secs = elf_sections(b)
    by_name = {s["name"]: (i, s) for i, s in enumerate(secs)}
    if "maps" not in by_name or a.section not in by_name:
        raise SystemExit("%s: needs a 'maps' and a '%s' section" % (a.obj, a.section))
    maps_idx, maps = by_name["maps"]
    prog_idx, prog = by_name[a.section]
    symtab = next(s for s in secs if s["type"] == 2)
    strtab = secs[symtab["link"]]
    def sym(i):
        o = symtab["off"] + i * 24
        name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", b, o)
        so = strtab["off"] + name
        return b[so:b.index(b"\0", so)].decode(), info, shndx, value
    # maps
    fds = {}
    for o in range(0, maps["size"], 20):
        mtype, ks, vs, maxe, flags = struct.unpack_from("<5I", b, maps["off"] + o)
        fd, _ = bpf(BPF_MAP_CREATE, struct.pack("<5I", mtype, ks, vs, maxe, flags).ljust(72, b"\0"))
        fds[o] = fd
    insns = bytearray(b[prog["off"]:prog["off"] + prog["size"]])
    rel = by_name.get(".rel" + a.section)
    if rel:
        r = rel[1]
        for o in range(r["off"], r["off"] + r["size"], 16):
            off, info = struct.unpack_from("<QQ", b, o)
            name, _, shndx, value = sym(info >> 32)
            if shndx != maps_idx:
                raise SystemExit("relocation at insn %d against %s: only map relocations are supported" % (off // 8, name))
            insns[off + 1] = (insns[off + 1] & 0x0f) | (1 << 4)  # src_reg = BPF_PSEUDO_MAP_FD
            struct.pack_into("<i", insns, off + 4, fds[value])
    lic = by_name.get("license")
    license = (b[lic[1]["off"]:lic[1]["off"] + lic[1]["size"]].rstrip(b"\0") if lic else b"GPL") + b"\0"
    # every global function symbol in the section is a program entry (this
    # loader handles one program per section, which is all legacy_hist has)
    entries = [sym(i) for i in range(symtab["size"] // 24)]
    entries = [e for e in entries if e[2] == prog_idx and (e[1] & 0xf) == 2]
    if len(entries) != 1 or entries[0][3] != 0:
        raise SystemExit("expected exactly one program at offset 0 of section %s" % a.section)
    name = entries[0][0]
    lic_buf = ctypes.create_string_buffer(license)
    ins_buf = ctypes.create_string_buffer(bytes(insns), len(insns))
    def load(level, logsize):
        log = ctypes.create_string_buffer(logsize)
        attr = struct.pack("<IIQQIIQII16s", PROG_TYPES[a.section], len(insns) // 8,
                           ctypes.addressof(ins_buf), ctypes.addressof(lic_buf), level, len(log),
                           ctypes.addressof(log), 0, 0, name.encode()[:15]).ljust(152, b"\0")
        try:
            return bpf(BPF_PROG_LOAD, attr)[0], log
        except OSError as e:
            return e, log
    # log level 4 = statistics only; on failure reload with the full log
    pfd, log = load(4, 1 << 16)
    if isinstance(pfd, OSError):
        err, log = load(1, 1 << 26)
        print("FAIL %s: %s\n%s" % (name, pfd, log.value.decode(errors="replace")[-20000:]))
        return 1
    stats = [l for l in log.value.decode(errors="replace").splitlines() if l.startswith("processed")]
    print("OK   %s loaded (fd %d, %d maps) %s" % (name, pfd, len(fds), stats[-1] if stats else ""))
    if a.data:
        data = open(a.data, "rb").read()
        dbuf = ctypes.create_string_buffer(data, len(data))
        out = ctypes.create_string_buffer(len(data) + 256)
        attr = struct.pack("<IIIIQQII", pfd, 0, len(data), len(out), ctypes.addressof(dbuf),
                           ctypes.addressof(out), a.repeat, 0).ljust(80, b"\0")
        _, raw = bpf(BPF_PROG_TEST_RUN, attr)
        _, retval, _, _, _, _, _, duration = struct.unpack_from("<IIIIQQII", raw)
        print("     run: retval %d, duration (average) %dns, repeat %d" % (retval, duration, a.repeat))
    return 0

if __name__ == "__main__":
    sys.exit(main())
