//! Traffic sources: a pcap/pcapng capture, or a named mix generated from a seed.
//!
//! Generated packets are well formed (the shapes real networks carry, unlike `kops diff`'s
//! fuzzing generator in [`crate::packet`]): Ethernet, optional 802.1Q/802.1ad tags,
//! IPv4 (valid header checksum, some fragments) or IPv6, then TCP/UDP with valid checksums
//! or ICMP/ICMPv6 echo, and payload up to the mix's frame sizes. Packets belong to flows
//! (5-tuples) drawn with a Zipf distribution, so a few flows carry most packets as on real
//! links. The same name, count and seed always give the same packets.

use std::path::Path;

use kops_rng::Rng;

use crate::packet::ip_checksum;

/// A named traffic mix.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub name: &'static str,
    pub about: &'static str,
    /// Percent of IPv6 packets (the rest IPv4).
    pub v6: u64,
    /// Weights of TCP, UDP and ICMP.
    pub l4: [u64; 3],
    /// Percent with a VLAN tag (a tenth of those double-tagged).
    pub vlan: u64,
    /// Percent of IPv4 packets that are fragments (first or later).
    pub frag: u64,
    /// Percent of TCP packets that are SYNs (the rest ACK/PSH).
    pub syn: u64,
    pub flows: usize,
    /// Zipf exponent of packets per flow (0: every flow alike).
    pub zipf: f64,
    /// Frame sizes (bytes without FCS, before tags) with weights.
    pub sizes: &'static [(usize, u64)],
}

/// The classic IMIX: 64, 594 and 1518-byte frames on the wire (7:4:1), here without FCS.
const IMIX: &[(usize, u64)] = &[(60, 7), (590, 4), (1514, 1)];

const IPV4_TCP: Mix = Mix {
    name: "ipv4-tcp",
    about: "IPv4 TCP (2% SYN), 1000 flows (Zipf 1.1), IMIX sizes",
    v6: 0,
    l4: [1, 0, 0],
    vlan: 0,
    frag: 0,
    syn: 2,
    flows: 1000,
    zipf: 1.1,
    sizes: IMIX,
};

/// The named mixes `--traffic` knows.
pub const MIXES: &[Mix] = &[
    Mix {
        name: "imix",
        about: "IPv4 80% / IPv6 20%, TCP 60 / UDP 35 / ICMP 5, 5% VLAN, 1% fragments, 1000 flows (Zipf 1.1), IMIX frames 64/594/1518 (7:4:1)",
        v6: 20,
        l4: [60, 35, 5],
        vlan: 5,
        frag: 1,
        syn: 2,
        flows: 1000,
        zipf: 1.1,
        sizes: IMIX,
    },
    Mix {
        name: "ipv4-udp",
        about: "IPv4 UDP, 100 flows (Zipf 1.0), IMIX sizes",
        v6: 0,
        l4: [0, 1, 0],
        vlan: 0,
        frag: 0,
        syn: 0,
        flows: 100,
        zipf: 1.0,
        sizes: IMIX,
    },
    IPV4_TCP,
    Mix { name: "ipv6-tcp", about: "IPv6 TCP (2% SYN), 1000 flows (Zipf 1.1), IMIX sizes", v6: 100, ..IPV4_TCP },
    Mix {
        name: "vlan",
        about: "every frame VLAN-tagged (10% 802.1ad double tags), IPv4/IPv6 TCP/UDP, IMIX sizes",
        v6: 30,
        l4: [60, 40, 0],
        vlan: 100,
        frag: 0,
        syn: 2,
        flows: 500,
        zipf: 1.0,
        sizes: IMIX,
    },
    Mix {
        name: "fragments",
        about: "IPv4 UDP, half of the packets fragments (first or later), 200 flows",
        v6: 0,
        l4: [0, 1, 0],
        vlan: 0,
        frag: 50,
        syn: 0,
        flows: 200,
        zipf: 1.0,
        sizes: &[(590, 1), (1514, 2)],
    },
    Mix {
        name: "syn-flood",
        about: "64-byte IPv4 TCP SYNs from 10000 sources (uniform), to a few ports",
        v6: 0,
        l4: [1, 0, 0],
        vlan: 0,
        frag: 0,
        syn: 100,
        flows: 10000,
        zipf: 0.0,
        sizes: &[(60, 1)],
    },
];

/// Packets from one source, with what it was.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub source: String,
    pub packets: Vec<Vec<u8>>,
}

/// `spec` is a mix name or a pcap/pcapng file; `count` packets are generated from a mix
/// (a file gives what it holds).
pub fn load(spec: &str, count: usize, seed: u64) -> Result<Traffic, String> {
    if let Some(m) = MIXES.iter().find(|m| m.name == spec) {
        return Ok(Traffic { source: format!("mix `{}` ({} packets, seed {seed})", m.name, count), packets: generate(m, count, seed) });
    }
    let p = Path::new(spec);
    if p.is_file() {
        let packets = read_capture(p)?;
        return Ok(Traffic { source: format!("{spec} ({} packets)", packets.len()), packets });
    }
    Err(format!("traffic `{spec}` is neither a file nor a mix; mixes: {}", names().join(", ")))
}

pub fn names() -> Vec<&'static str> {
    MIXES.iter().map(|m| m.name).collect()
}

/// One line per mix, for `--traffic list`.
pub fn list() -> String {
    MIXES.iter().map(|m| format!("{:<10} {}\n", m.name, m.about)).collect()
}

struct Flow {
    v6: bool,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    vlan: Option<(u16, Option<u16>)>,
    mac: [u8; 12],
}

fn pick_weighted<T: Copy>(rng: &mut Rng, v: &[(T, u64)]) -> T {
    let total: u64 = v.iter().map(|x| x.1).sum();
    let mut r = rng.below(total.max(1));
    for &(x, w) in v {
        if r < w {
            return x;
        }
        r -= w;
    }
    v[v.len() - 1].0
}

fn new_flow(m: &Mix, rng: &mut Rng) -> Flow {
    let v6 = rng.below(100) < m.v6;
    let proto = pick_weighted(rng, &[(6u8, m.l4[0]), (17, m.l4[1]), (if v6 { 58 } else { 1 }, m.l4[2])]);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if v6 {
        src[..2].copy_from_slice(&[0x20, 0x01]);
        dst[..2].copy_from_slice(&[0x20, 0x01]);
        src[2..].copy_from_slice(&rng.bytes(14));
        dst[2..].copy_from_slice(&rng.bytes(14));
    } else {
        src[..4].copy_from_slice(&[10, rng.next() as u8, rng.next() as u8, 1 + rng.below(254) as u8]);
        dst[..4].copy_from_slice(&[192, 168, rng.next() as u8, 1 + rng.below(254) as u8]);
    }
    let well_known = [80u16, 443, 53, 22, 8080, 123, 5201];
    let dport = if rng.chance(80) { well_known[rng.below(well_known.len() as u64) as usize] } else { 1 + rng.below(65535) as u16 };
    let vlan = rng.chance(m.vlan).then(|| {
        let outer = rng.chance(10).then(|| 100 + rng.below(100) as u16);
        (1 + rng.below(4094) as u16, outer)
    });
    let mut mac = [0u8; 12];
    mac.copy_from_slice(&rng.bytes(12));
    mac[0] &= 0xfe;
    mac[6] &= 0xfe;
    Flow { v6, proto, src, dst, sport: 1024 + rng.below(64512) as u16, dport, vlan, mac }
}

/// Flow index of rank drawn with P(k) ~ 1 / k^s (inverse transform on the cumulative sum).
fn zipf_index(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

/// `count` packets of mix `m` from `seed`.
pub fn generate(m: &Mix, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let flows: Vec<Flow> = (0..m.flows).map(|_| new_flow(m, &mut rng)).collect();
    let mut acc = 0.0;
    let cdf: Vec<f64> = (1..=m.flows)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(m.zipf);
            acc
        })
        .collect();
    (0..count)
        .map(|i| {
            let f = &flows[zipf_index(&cdf, &mut rng)];
            let size = pick_weighted(&mut rng, m.sizes);
            packet(m, f, size, i as u16, &mut rng)
        })
        .collect()
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// Ones' complement sum over the pseudo header and `l4` (TCP/UDP/ICMPv6 checksums).
fn l4_checksum(f: &Flow, proto: u8, l4: &[u8]) -> u16 {
    let mut b = Vec::new();
    if f.v6 {
        b.extend_from_slice(&f.src);
        b.extend_from_slice(&f.dst);
        b.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        b.extend_from_slice(&f.src[..4]);
        b.extend_from_slice(&f.dst[..4]);
        b.extend_from_slice(&[0, proto]);
        put16(&mut b, l4.len() as u16);
    }
    b.extend_from_slice(l4);
    if b.len() % 2 == 1 {
        b.push(0);
    }
    ip_checksum(&b)
}

fn packet(m: &Mix, f: &Flow, frame: usize, id: u16, rng: &mut Rng) -> Vec<u8> {
    let mut p = f.mac.to_vec();
    if let Some((inner, outer)) = f.vlan {
        if let Some(o) = outer {
            put16(&mut p, 0x88a8);
            put16(&mut p, o);
        }
        put16(&mut p, 0x8100);
        put16(&mut p, inner);
    }
    put16(&mut p, if f.v6 { 0x86dd } else { 0x0800 });
    let l3_hdr = if f.v6 { 40 } else { 20 };
    let l4_hdr = match f.proto {
        6 => 20,
        17 => 8,
        _ => 8,
    };
    let payload = frame.saturating_sub(14 + l3_hdr + l4_hdr).max(if f.proto == 6 { 0 } else { 4 });
    let mut l4 = Vec::with_capacity(l4_hdr + payload);
    match f.proto {
        6 => {
            put16(&mut l4, f.sport);
            put16(&mut l4, f.dport);
            l4.extend_from_slice(&(rng.next() as u32).to_be_bytes()); // seq
            let syn = rng.below(100) < m.syn;
            l4.extend_from_slice(&(if syn { 0 } else { rng.next() as u32 }).to_be_bytes()); // ack
            l4.push(5 << 4);
            l4.push(if syn { 0x02 } else if payload > 0 { 0x18 } else { 0x10 });
            put16(&mut l4, 64240);
            put16(&mut l4, 0);
            put16(&mut l4, 0);
        }
        17 => {
            put16(&mut l4, f.sport);
            put16(&mut l4, f.dport);
            put16(&mut l4, (8 + payload) as u16);
            put16(&mut l4, 0);
        }
        _ => {
            l4.push(if f.v6 { 128 } else { 8 }); // echo request
            l4.push(0);
            put16(&mut l4, 0);
            put16(&mut l4, f.sport);
            put16(&mut l4, id);
        }
    }
    l4.extend(rng.bytes(payload));
    let csum_at = match f.proto {
        6 => Some(16),
        17 => Some(6),
        _ => Some(2),
    };
    if let Some(at) = csum_at {
        let c = if f.proto == 1 { ip_checksum(&l4) } else { l4_checksum(f, f.proto, &l4) };
        let c = if f.proto == 17 && c == 0 { 0xffff } else { c };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    if f.v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        put16(&mut p, l4.len() as u16);
        p.push(f.proto);
        p.push(64);
        p.extend_from_slice(&f.src);
        p.extend_from_slice(&f.dst);
    } else {
        let mut h = vec![0x45, 0];
        put16(&mut h, (20 + l4.len()) as u16);
        put16(&mut h, id);
        let frag: u16 = if rng.below(100) < m.frag {
            if rng.chance(50) { 0x2000 } else { (1 + rng.below(180)) as u16 } // first (MF) or a later one
        } else {
            0x4000
        };
        put16(&mut h, frag);
        h.push(64);
        h.push(f.proto);
        put16(&mut h, 0);
        h.extend_from_slice(&f.src[..4]);
        h.extend_from_slice(&f.dst[..4]);
        let c = ip_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend(h);
    }
    p.extend(l4);
    p
}

/// Ethernet frames of a pcap or pcapng file (the format is told by its magic number).
pub fn read_capture(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use pcap_file::pcap::PcapReader;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use pcap_file::DataLink;
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = std::fs::read(path).map_err(|e| at(&e))?;
    if bytes.len() < 4 {
        return Err(at(&"too short for a pcap or pcapng file"));
    }
    let mut out = Vec::new();
    if bytes[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(&bytes[..]).map_err(|e| at(&e))?;
        let mut links = Vec::new();
        while let Some(b) = r.next_block() {
            match b.map_err(|e| at(&format!("block {}: {e}", out.len())))? {
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    let link = links.get(p.interface_id as usize).copied();
                    if link != Some(DataLink::ETHERNET) {
                        return Err(at(&format!("packet {} is on interface {} of link type {link:?}; only Ethernet is supported", out.len(), p.interface_id)));
                    }
                    out.push(p.data.to_vec());
                }
                Block::SimplePacket(p) => out.push(p.data.to_vec()),
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(&bytes[..]).map_err(|e| at(&e))?;
        let link = r.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(at(&format!("link type {link:?}; only Ethernet captures are supported")));
        }
        while let Some(p) = r.next_packet() {
            out.push(p.map_err(|e| at(&format!("packet {}: {e}", out.len())))?.data.to_vec());
        }
    }
    if out.is_empty() {
        return Err(at(&"the capture holds no packets"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a generated frame independently of the generator: header fields, lengths and
    /// every checksum recomputed from the bytes.
    fn check_frame(p: &[u8]) -> (u16, u8) {
        let mut off = 12;
        let mut et = u16::from_be_bytes([p[off], p[off + 1]]);
        while et == 0x8100 || et == 0x88a8 {
            off += 4;
            et = u16::from_be_bytes([p[off], p[off + 1]]);
        }
        off += 2;
        let (proto, l4, pseudo): (u8, &[u8], Vec<u8>) = match et {
            0x0800 => {
                let h = &p[off..off + 20];
                assert_eq!(ip_checksum(h), 0, "IPv4 header checksum");
                assert_eq!(u16::from_be_bytes([h[2], h[3]]) as usize, p.len() - off, "IPv4 total length");
                let l4 = &p[off + 20..];
                let mut ps = h[12..20].to_vec();
                ps.extend_from_slice(&[0, h[9]]);
                ps.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                (h[9], l4, ps)
            }
            0x86dd => {
                let h = &p[off..off + 40];
                assert_eq!(u16::from_be_bytes([h[4], h[5]]) as usize, p.len() - off - 40, "IPv6 payload length");
                let l4 = &p[off + 40..];
                let mut ps = h[8..40].to_vec();
                ps.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                ps.extend_from_slice(&[0, 0, 0, h[6]]);
                (h[6], l4, ps)
            }
            x => panic!("ethertype {x:#x}"),
        };
        let mut sum = if proto == 1 { Vec::new() } else { pseudo };
        sum.extend_from_slice(l4);
        if sum.len() % 2 == 1 {
            sum.push(0);
        }
        assert_eq!(ip_checksum(&sum), 0, "L4 checksum of protocol {proto}");
        (et, proto)
    }

    #[test]
    fn every_mix_makes_valid_reproducible_frames_in_its_proportions() {
        for m in MIXES {
            let a = generate(m, 400, 7);
            assert_eq!(a, generate(m, 400, 7), "{}: same seed, same packets", m.name);
            assert_ne!(a, generate(m, 400, 8), "{}: another seed, other packets", m.name);
            let mut v6 = 0;
            for p in &a {
                assert!(p.len() >= 60 && p.len() <= 1514 + 8, "{}: frame of {} bytes", m.name, p.len());
                if check_frame(p).0 == 0x86dd {
                    v6 += 1;
                }
            }
            let pct = v6 * 100 / a.len() as u64;
            assert!(pct.abs_diff(m.v6) <= 12, "{}: {pct}% IPv6, mix says {}%", m.name, m.v6);
        }
    }

    #[test]
    fn zipf_flows_put_most_packets_on_few_flows() {
        let m = MIXES.iter().find(|m| m.name == "ipv4-tcp").unwrap();
        let pkts = generate(m, 5000, 3);
        let mut per_flow = std::collections::HashMap::new();
        for p in &pkts {
            *per_flow.entry(p[26..38].to_vec()).or_insert(0usize) += 1; // addresses and ports
        }
        let mut counts: Vec<usize> = per_flow.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top10: usize = counts.iter().take(10).sum();
        // Zipf 1.1 over 1000 flows: the top 10 ranks hold about 40% of the mass.
        assert!(top10 * 100 / pkts.len() > 25, "top 10 flows carry {top10} of {}", pkts.len());
        let syn_flood = generate(MIXES.iter().find(|m| m.name == "syn-flood").unwrap(), 500, 3);
        assert!(syn_flood.iter().all(|p| p[47] == 0x02 && p.len() == 60), "SYNs in 60-byte frames (64 on the wire)");
    }

    #[test]
    fn pcap_and_pcapng_round_trip_and_bad_files_are_named() {
        use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
        let pkts = generate(&MIXES[0], 20, 1);
        let dir = std::env::temp_dir().join(format!("kops-traffic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.pcap");
        let mut w = PcapWriter::with_header(Vec::new(), PcapHeader::default()).unwrap();
        for (i, p) in pkts.iter().enumerate() {
            w.write_packet(&PcapPacket::new(std::time::Duration::from_micros(i as u64), p.len() as u32, p)).unwrap();
        }
        std::fs::write(&f, w.into_writer()).unwrap();
        assert_eq!(read_capture(&f).unwrap(), pkts);
        {
            use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
            use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
            use pcap_file::pcapng::PcapNgWriter;
            let g = dir.join("t.pcapng");
            let mut w = PcapNgWriter::new(Vec::new()).unwrap();
            w.write_pcapng_block(InterfaceDescriptionBlock::new(pcap_file::DataLink::ETHERNET, 65535)).unwrap();
            for p in &pkts {
                let b = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: std::time::Duration::ZERO,
                    original_len: p.len() as u32,
                    data: std::borrow::Cow::Borrowed(p),
                    options: vec![],
                };
                w.write_pcapng_block(b).unwrap();
            }
            std::fs::write(&g, w.into_inner()).unwrap();
            assert_eq!(read_capture(&g).unwrap(), pkts);
        }
        let t = load(f.to_str().unwrap(), 0, 0).unwrap();
        assert_eq!(t.packets.len(), 20);
        std::fs::write(&f, [0xd4, 0xc3, 0xb2]).unwrap();
        assert!(read_capture(&f).unwrap_err().contains("too short"));
        std::fs::write(&f, b"not a capture at all").unwrap();
        assert!(read_capture(&f).unwrap_err().starts_with(&f.display().to_string()));
        assert!(load("no-such-mix", 1, 1).unwrap_err().contains("imix"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
