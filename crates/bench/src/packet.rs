//! The benchmark input: a deterministic (seeded) Ethernet + IPv4 + UDP packet with a valid
//! IPv4 header checksum and random addresses, ports and payload, the same shape as
//! bpf/gen_packet.py makes.

/// splitmix64: small and seedable; inputs only need to be deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

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
    let mut r = Rng(seed);
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
}
