//! Outcomes of one run and their comparison, shared by differential testing (`kops diff`)
//! and the benchmark's check before timing.

use std::collections::BTreeMap;

/// Map contents by map name, then key -> value (array entries that are all zero dropped,
/// per-CPU values reduced to the CPU the run happened on); see [`crate::Vm::snapshot_maps`].
pub type MapState = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub r0: u64,
    /// The output packet, for program types that have one.
    pub data_out: Option<Vec<u8>>,
    pub maps: MapState,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Differences between the oracle's outcome `o` and `x`, one line each (empty: equal).
/// With `r0_bits32`, r0 is compared on its low 32 bits (the kernel's test run returns a
/// u32). Maps are compared where both sides could read them, at most four keys per map.
pub fn differences(o: &Outcome, x: &Outcome, r0_bits32: bool) -> Vec<String> {
    let mut d = Vec::new();
    let (a, b) = if r0_bits32 { (o.r0 as u32 as u64, x.r0 as u32 as u64) } else { (o.r0, x.r0) };
    if a != b {
        d.push(format!("r0: {a:#x} vs {b:#x}"));
    }
    if o.data_out != x.data_out {
        let (p, q) = (o.data_out.as_deref().unwrap_or(&[]), x.data_out.as_deref().unwrap_or(&[]));
        let first = p.iter().zip(q).position(|(u, v)| u != v).unwrap_or(p.len().min(q.len()));
        d.push(format!("output packet: {} vs {} bytes, first difference at byte {first}", p.len(), q.len()));
    }
    for (name, om) in &o.maps {
        let Some(xm) = x.maps.get(name) else { continue };
        if om != xm {
            let mut keys: Vec<&Vec<u8>> = om.keys().chain(xm.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys.into_iter().filter(|k| om.get(*k) != xm.get(*k)).take(4) {
                let show = |v: Option<&Vec<u8>>| v.map(|v| hex(v)).unwrap_or_else(|| "(absent)".into());
                d.push(format!("map `{name}` key {}: {} vs {}", hex(k), show(om.get(k)), show(xm.get(k))));
            }
        }
    }
    d
}
