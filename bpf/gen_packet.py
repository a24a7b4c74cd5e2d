#!/usr/bin/env python3
"""Write a deterministic Ethernet+IPv4+UDP (or TCP) test packet with random
addresses, ports and payload (valid IPv4 header checksum).
Usage: gen_packet.py OUT [LEN=1500] [udp|tcp] [SEED=1]"""
import random, struct, sys

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def packet(length=1500, l4="udp", seed=1):
    r = random.Random(seed)
    if length < 64:
        raise SystemExit("LEN must be >= 64")
    eth = bytes(r.randrange(256) for _ in range(12)) + b"\x08\x00"
    proto = 17 if l4 == "udp" else 6
    tot = length - 14
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, r.randrange(65536), 0x4000, 64, proto, 0,
                     bytes(r.randrange(256) for _ in range(4)), bytes(r.randrange(256) for _ in range(4)))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    sport, dport = r.randrange(1024, 65536), r.randrange(1, 65536)
    if l4 == "udp":
        hdr = struct.pack("!HHHH", sport, dport, tot - 20, 0)
    else:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, r.getrandbits(32), r.getrandbits(32), 5 << 4, 0x18,
                          r.randrange(65536), 0, 0)
    pay = bytes(r.randrange(256) for _ in range(length - 14 - 20 - len(hdr)))
    return eth + ip + hdr + pay

if __name__ == "__main__":
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    out = packet(int(a[1]) if len(a) > 1 else 1500, a[2] if len(a) > 2 else "udp",
                 int(a[3]) if len(a) > 3 else 1)
    open(a[0], "wb").write(out)
