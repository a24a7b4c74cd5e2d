//! Packets for benchmarks and differential tests, from the one seeded generator
//! ([`kops_rng::Rng`]):
//! - [`udp_packet`]: the benchmark input, a deterministic Ethernet + IPv4 + UDP packet with
//!   a valid IPv4 header checksum and random addresses, ports and payload (the same shape
//!   as bpf/gen_packet.py makes);
//! - [`gen_input`] / [`gen_packet`]: `kops diff`'s inputs, a mix of Ethernet (+ VLAN tags)
//!   IPv4/IPv6/ARP/other with TCP/UDP/ICMP/other, fragments, options, bad lengths and
//!   checksums, truncations, and fixed corner sizes first.

use kops_rng::Rng;
use kops_vm::{CtxKind, ProgInput};

/// RFC 1071 checksum of `b` (even length).
pub fn ip_checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// `len` bytes (at least 42: Ethernet 14 + IPv4 20 + UDP 8) from `seed`.
pub fn udp_packet(len: usize, seed: u64) -> Vec<u8> {
    assert!(len >= 42, "packet length {len} below the 42 bytes of Ethernet+IPv4+UDP headers");
    let mut r = Rng::new(seed);
    let mut p = r.bytes(12); // destination and source MAC
    p[0] &= 0xfe; // unicast
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&(r.next() as u16).to_be_bytes()); // id
    ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip.push(64); // ttl
    ip.push(17); // UDP
    ip.extend_from_slice(&[0, 0]);
    ip.extend(r.bytes(8)); // saddr, daddr
    let c = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(ip);
    let sport = 1024 + (r.next() % (65536 - 1024)) as u16;
    let dport = 1 + (r.next() % 65535) as u16;
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(ip_len - 20).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum
    let rest = len - p.len();
    p.extend(r.bytes(rest));
    p
}


/// Sizes of the first inputs of every run: empty, one byte, a bare Ethernet header, a
/// minimum frame, a full MTU.
pub const FIXED_SIZES: [usize; 5] = [0, 1, 14, 60, 1500];

/// Input `i` of a differential run: the fixed sizes first, then random packets (or
/// context bytes for program types without a packet).
pub fn gen_input(kind: CtxKind, i: usize, rng: &mut Rng) -> ProgInput {
    if !kind.has_packet() {
        // Context bytes for other program types (a multiple of 8: raw tracepoint args).
        let n = 8 * (1 + rng.below(12) as usize);
        return ProgInput { data: rng.bytes(n), ctx: None };
    }
    let mut p = gen_packet(rng);
    if i < FIXED_SIZES.len() {
        p.resize(FIXED_SIZES[i], 0);
        if p.len() > 60 {
            // pad the 1500-byte case with random payload, not zeros
            let n = p.len();
            let tail = rng.bytes(n);
            for (j, b) in tail.into_iter().enumerate().skip(60) {
                p[j] = b;
            }
        }
    } else {
        match rng.below(10) {
            0..=5 => {} // headers as built, with a random payload
            6 | 7 => {
                // truncated somewhere inside the headers
                let cut = rng.below(p.len().min(80) as u64 + 1) as usize;
                p.truncate(cut);
            }
            8 => p.resize(rng.below(1515) as usize, 0),
            _ => {
                let n = rng.below(200) as usize;
                p = rng.bytes(n);
            }
        }
    }
    ProgInput { data: p, ctx: None }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// Ethernet (+ VLAN tags) + IPv4/IPv6/other + TCP/UDP/ICMP/other + payload, random fields.
pub fn gen_packet(rng: &mut Rng) -> Vec<u8> {
    let mut p = rng.bytes(12); // dst, src MAC
    if rng.chance(10) {
        p[0] = 0xff; // broadcast / multicast bit set sometimes
    }
    let l3 = rng.below(100);
    let ethertype: u16 = match l3 {
        0..=49 => 0x0800,
        50..=84 => 0x86dd,
        85..=89 => 0x0806,
        _ => rng.next() as u16,
    };
    let tags = match rng.below(10) {
        0 | 1 => 1,
        2 => 2,
        _ => 0,
    };
    for t in 0..tags {
        put16(&mut p, if tags == 2 && t == 0 { 0x88a8 } else { 0x8100 });
        put16(&mut p, rng.next() as u16);
    }
    put16(&mut p, ethertype);
    let l4proto = rng.pick(&[6u8, 6, 6, 17, 17, 17, 1, 58, 47, 0]);
    let payload_len = rng.below(200) as usize;
    let l4 = gen_l4(rng, l4proto, payload_len);
    match ethertype {
        0x0800 => {
            let opts = if rng.chance(15) { 4 * (1 + rng.below(10) as usize) } else { 0 };
            let ihl = 5 + opts / 4;
            let total = (ihl * 4 + l4.len()) as u16;
            let mut h = vec![0x40 | ihl as u8, rng.next() as u8];
            put16(&mut h, if rng.chance(90) { total } else { rng.next() as u16 });
            put16(&mut h, rng.next() as u16);
            let frag: u16 = match rng.below(10) {
                0 => 0x2000 | (rng.next() as u16 & 0x1fff), // more fragments
                1 => rng.next() as u16 & 0x1fff,            // a later fragment
                _ => if rng.chance(50) { 0x4000 } else { 0 },
            };
            put16(&mut h, frag);
            h.push(rng.next() as u8); // ttl
            h.push(if l4proto == 58 { 1 } else { l4proto });
            put16(&mut h, 0);
            let addr = |rng: &mut Rng| -> Vec<u8> {
                match rng.below(4) {
                    0 => vec![10, rng.next() as u8, rng.next() as u8, rng.next() as u8],
                    1 => vec![192, 168, rng.next() as u8, rng.next() as u8],
                    _ => rng.bytes(4),
                }
            };
            h.extend(addr(rng));
            h.extend(addr(rng));
            h.extend(rng.bytes(opts));
            if rng.chance(90) {
                let c = ip_checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            } else {
                let c = rng.next() as u16;
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            p.extend(h);
            p.extend(l4);
        }
        0x86dd => {
            let mut h = vec![0x60 | (rng.next() as u8 & 0x0f), rng.next() as u8, rng.next() as u8, rng.next() as u8];
            let mut body = Vec::new();
            let mut next = if l4proto == 1 { 58 } else { l4proto };
            if rng.chance(15) {
                // one hop-by-hop / destination options extension header first
                let ext = rng.pick(&[0u8, 60]);
                let len8 = rng.below(3) as usize;
                body.push(next);
                body.push(len8 as u8);
                body.extend(rng.bytes(6 + 8 * len8));
                next = ext;
            }
            body.extend(&l4);
            put16(&mut h, if rng.chance(90) { body.len() as u16 } else { rng.next() as u16 });
            h.push(next);
            h.push(rng.next() as u8);
            h.extend(rng.bytes(32));
            p.extend(h);
            p.extend(body);
        }
        _ => p.extend(rng.bytes(28 + payload_len)),
    }
    p
}

fn gen_l4(rng: &mut Rng, proto: u8, payload: usize) -> Vec<u8> {
    let port = |rng: &mut Rng| -> u16 {
        if rng.chance(40) {
            rng.pick(&[22u16, 53, 80, 443, 8080, 123, 1, 65535])
        } else {
            rng.next() as u16
        }
    };
    let mut h = Vec::new();
    match proto {
        6 => {
            put16(&mut h, port(rng));
            put16(&mut h, port(rng));
            h.extend(rng.bytes(8)); // seq, ack
            let opts = if rng.chance(30) { 4 * rng.below(11) as usize } else { 0 };
            h.push((((20 + opts) / 4) as u8) << 4);
            h.push(rng.next() as u8); // flags
            h.extend(rng.bytes(6)); // window, checksum, urgent
            h.extend(rng.bytes(opts));
        }
        17 => {
            put16(&mut h, port(rng));
            put16(&mut h, port(rng));
            put16(&mut h, (8 + payload) as u16);
            h.extend(rng.bytes(2));
        }
        1 | 58 => {
            h.push(rng.pick(&[0u8, 8, 3, 11, 128, 129, 135, 136]));
            h.extend(rng.bytes(7));
        }
        _ => {}
    }
    h.extend(rng.bytes(payload));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_valid_and_the_packet_is_deterministic() {
        let p = udp_packet(1500, 1);
        assert_eq!(p.len(), 1500);
        assert_eq!(&p[12..14], &[0x08, 0x00]);
        assert_eq!(p[14], 0x45);
        assert_eq!(u16::from_be_bytes([p[16], p[17]]), 1486);
        assert_eq!(p[23], 17);
        // A correct IPv4 header sums to 0xffff, so its checksum is 0 (RFC 1071).
        assert_eq!(ip_checksum(&p[14..34]), 0);
        assert_eq!(u16::from_be_bytes([p[38], p[39]]), 1466);
        assert_eq!(p, udp_packet(1500, 1));
        assert_ne!(p, udp_packet(1500, 2));
    }

    #[test]
    fn fixed_sizes_come_first_and_headers_are_real() {
        let mut rng = Rng::new(7);
        for (i, want) in FIXED_SIZES.iter().enumerate() {
            assert_eq!(gen_input(CtxKind::Xdp, i, &mut rng).data.len(), *want);
        }
        // Over many packets: IPv4 headers with a valid checksum, and IPv6, and VLAN tags.
        let (mut v4ok, mut v6, mut vlan) = (0, 0, 0);
        for _ in 0..500 {
            let p = gen_packet(&mut rng);
            let mut off = 12;
            let mut et = u16::from_be_bytes([p[off], p[off + 1]]);
            while et == 0x8100 || et == 0x88a8 {
                vlan += 1;
                off += 4;
                et = u16::from_be_bytes([p[off], p[off + 1]]);
            }
            let l3 = off + 2;
            if et == 0x0800 {
                let ihl = (p[l3] & 0x0f) as usize * 4;
                // a correct header sums to 0xffff (RFC 1071), i.e. its checksum is 0
                if ip_checksum(&p[l3..l3 + ihl]) == 0 {
                    v4ok += 1;
                }
            } else if et == 0x86dd {
                assert_eq!(p[l3] >> 4, 6);
                v6 += 1;
            }
        }
        assert!(v4ok > 150 && v6 > 100 && vlan > 50, "v4ok {v4ok} v6 {v6} vlan {vlan}");
    }

}
