//! Rendering a [`Report`]: terminal table, JSON, SVG chart, BENCHMARKS.md.

use crate::{Ratio, Report};
use std::fmt::Write as _;

pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// Column order of the known runtimes; others (per-pass `kops:<pass>`) follow as seen.
const ORDER: [&str; 8] = ["kernel", "kernel2", "jit", "kops", "cranelift", "native", "rbpf", "interp"];

/// Runtimes in column order.
fn runtimes(rep: &Report) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &rep.results {
        if !v.contains(&r.runtime) {
            v.push(r.runtime.clone());
        }
    }
    let rank = |r: &String| ORDER.iter().position(|o| o == r).unwrap_or(ORDER.len());
    v.sort_by_key(|r| rank(r)); // stable: unknown ones keep their order
    v
}

/// Programs in order, the floor program first.
fn programs(rep: &Report) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    if let Some(f) = &rep.floor {
        if rep.results.iter().any(|r| &r.id.key == f) {
            v.push(f.clone());
        }
    }
    for r in &rep.results {
        if !v.contains(&r.id.key) {
            v.push(r.id.key.clone());
        }
    }
    v
}

/// Distinct ratio columns `(numerator, denominator, identity)`, identity control first.
fn ratio_columns(rep: &Report) -> Vec<(String, String, bool)> {
    let mut v: Vec<(String, String, bool)> = Vec::new();
    let mut push = |r: &Ratio| {
        let k = (r.numerator.clone(), r.denominator.clone(), r.identity);
        if !v.contains(&k) {
            v.push(k);
        }
    };
    rep.ratios.iter().filter(|r| r.identity).for_each(&mut push);
    rep.ratios.iter().filter(|r| !r.identity).for_each(&mut push);
    v
}

fn ratio_of<'a>(rep: &'a Report, p: &str, col: &(String, String, bool)) -> Option<&'a Ratio> {
    rep.ratios.iter().find(|r| r.id.key == p && r.numerator == col.0 && r.denominator == col.1)
}

fn col_name(c: &(String, String, bool)) -> String {
    if c.2 {
        format!("{}/{} (identity)", c.0, c.1)
    } else {
        format!("{}/{}", c.0, c.1)
    }
}

/// Whether a program is a bundled benchmark that stresses an idiom: its source's
/// `// stresses:` line exists and does not call it a control (objects from elsewhere, such
/// as libxdp1's, have no such line and stay out of the geometric means).
fn idiom_bearing(rep: &Report, p: &str) -> bool {
    if rep.floor.as_deref() == Some(p) {
        return false;
    }
    match rep.descriptions.get(p) {
        Some(d) => !d.starts_with("control"),
        None => false,
    }
}

/// Geometric mean of one ratio column over the idiom-bearing programs: (value, count).
pub fn geomean(rep: &Report, num: &str, den: &str) -> Option<(f64, usize)> {
    let v: Vec<f64> = rep
        .ratios
        .iter()
        .filter(|r| r.numerator == num && r.denominator == den && idiom_bearing(rep, &r.id.key) && r.ratio > 0.0)
        .map(|r| r.ratio.ln())
        .collect();
    if v.is_empty() {
        None
    } else {
        Some(((v.iter().sum::<f64>() / v.len() as f64).exp(), v.len()))
    }
}

/// One line on the identity control: how many programs came out within 3% of 1.0, and
/// which did not.
pub fn identity_line(rep: &Report) -> Option<String> {
    let ids: Vec<&Ratio> = rep.ratios.iter().filter(|r| r.identity && rep.floor.as_ref() != Some(&r.id.key)).collect();
    if ids.is_empty() {
        return None;
    }
    let off: Vec<String> =
        ids.iter().filter(|r| (r.ratio - 1.0).abs() > 0.03).map(|r| format!("{} {:.3}", r.id.key, r.ratio)).collect();
    let g = (ids.iter().map(|r| r.ratio.ln()).sum::<f64>() / ids.len() as f64).exp();
    let mut s = format!(
        "identity control ({}/{}): geomean {g:.3}, within 3% of 1.0 on {} of {} programs",
        ids[0].numerator,
        ids[0].denominator,
        ids.len() - off.len(),
        ids.len()
    );
    if !off.is_empty() {
        s.push_str(&format!("; outside: {}", off.join(", ")));
    }
    Some(s)
}

fn floor_line(rep: &Report) -> Option<String> {
    let f = rep.floor.as_ref()?;
    let parts: Vec<String> = runtimes(rep)
        .iter()
        .filter_map(|rt| rep.results.iter().find(|r| &r.id.key == f && &r.runtime == rt).map(|r| format!("{rt} {}", fmt_ns(r.median_ns))))
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "harness floor ({f}, returns at once): {} per run; times below include it",
        parts.join(", ")
    ))
}

/// Median ns per run per runtime (± half the min..max spread), then the ratios.
pub fn table(rep: &Report) -> String {
    let rts = runtimes(rep);
    let cols = ratio_columns(rep);
    let mut s = String::new();
    let pw = programs(rep).iter().map(|p| p.len()).max().unwrap_or(7).max(7) + 1;
    write!(s, "{:<pw$}", "program").unwrap();
    for rt in &rts {
        write!(s, " {:>17}", rt).unwrap();
    }
    s.push('\n');
    for p in programs(rep) {
        write!(s, "{p:<pw$}").unwrap();
        for rt in &rts {
            match rep.results.iter().find(|r| r.id.key == p && &r.runtime == rt) {
                Some(r) => write!(
                    s,
                    " {:>17}",
                    format!("{} ±{:.0}%", fmt_ns(r.median_ns), spread_pct(r.min_ns, r.max_ns, r.median_ns))
                )
                .unwrap(),
                None => write!(s, " {:>17}", "-").unwrap(),
            }
        }
        s.push('\n');
    }
    if !cols.is_empty() {
        s.push_str("\nratios (median time / median time, [95% bootstrap interval]; below 1.0 the numerator is faster):\n");
        write!(s, "{:<pw$}", "program").unwrap();
        for c in &cols {
            write!(s, " {:>21}", if c.2 { format!("{}/{} id", c.0, c.1) } else { col_name(c) }).unwrap();
        }
        s.push('\n');
        for p in programs(rep) {
            write!(s, "{p:<pw$}").unwrap();
            for c in &cols {
                match ratio_of(rep, &p, c) {
                    Some(r) => write!(s, " {:>21}", format!("{:.3} [{:.3},{:.3}]", r.ratio, r.ci_low, r.ci_high)).unwrap(),
                    None => write!(s, " {:>21}", "-").unwrap(),
                }
            }
            s.push('\n');
        }
        write!(s, "{:<pw$}", "geomean*").unwrap();
        for c in &cols {
            match geomean(rep, &c.0, &c.1) {
                Some((g, _)) => write!(s, " {:>21}", format!("{g:.3}")).unwrap(),
                None => write!(s, " {:>21}", "-").unwrap(),
            }
        }
        s.push_str("\n* over the bundled idiom-bearing programs (not the controls, the floor or other objects)\n");
    }
    if rep.results.iter().any(|r| r.instructions_per_packet.is_some()) {
        s.push_str("\ninstructions per run (callgrind, userspace runtimes, on the checked packet; no timing noise):\n");
        let irts: Vec<&String> = rts.iter().filter(|rt| matches!(rt.as_str(), "interp" | "jit" | "kops")).collect();
        write!(s, "{:<pw$}", "program").unwrap();
        for rt in &irts {
            write!(s, " {:>12}", rt).unwrap();
        }
        s.push_str("     kops/jit\n");
        for p in programs(rep) {
            write!(s, "{p:<pw$}").unwrap();
            let of = |rt: &str| rep.results.iter().find(|r| r.id.key == p && r.runtime == rt).and_then(|r| r.instructions_per_packet);
            for rt in &irts {
                match of(rt) {
                    Some(n) => write!(s, " {:>12.1}", n).unwrap(),
                    None => write!(s, " {:>12}", "-").unwrap(),
                }
            }
            match (of("kops"), of("jit")) {
                (Some(k), Some(j)) => writeln!(s, " {:>12.3}", k / j).unwrap(),
                _ => writeln!(s, " {:>12}", "-").unwrap(),
            }
        }
    }
    if !rep.stopped.is_empty() {
        writeln!(s, "\nmeasured {}", rep.stopped).unwrap();
    }
    if let Some(l) = floor_line(rep) {
        writeln!(s, "\n{l}").unwrap();
    }
    if let Some(l) = identity_line(rep) {
        writeln!(s, "{l}").unwrap();
    }
    for m in &rep.mismatches {
        writeln!(s, "MISMATCH (not timed): {} on {}: differs from {}: {}", m.id.key, m.runtime, m.oracle, m.detail).unwrap();
    }
    // Skips grouped by runtime and reason (instruction numbers dropped), to stay readable.
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for k in &rep.skipped {
        let reason = match k.reason.find(" at instruction ") {
            Some(i) => k.reason[..i].to_string(),
            None => k.reason.clone(),
        };
        match groups.iter_mut().find(|g| g.0 == k.runtime && g.1 == reason) {
            Some(g) => g.2.push(k.id.key.clone()),
            None => groups.push((k.runtime.clone(), reason, vec![k.id.key.clone()])),
        }
    }
    for (rt, why, progs) in groups {
        let list = if progs.len() > 4 { format!("{} programs", progs.len()) } else { progs.join(", ") };
        writeln!(s, "not measured on {rt}: {list}: {why}").unwrap();
    }
    s
}

fn spread_pct(min: f64, max: f64, med: f64) -> f64 {
    if med > 0.0 {
        100.0 * (max - min) / 2.0 / med
    } else {
        0.0
    }
}

pub fn json(rep: &Report) -> String {
    serde_json::to_string_pretty(rep).expect("report serializes")
}

/// Grouped horizontal bars: per program, the speedup `time(den) / time(num)` of each
/// series `(num, den)` present (above 1.0 the numerator is faster; dashed line at 1.0).
pub fn svg(rep: &Report, series: &[(&str, &str)]) -> String {
    let colors = ["#2a7", "#47c", "#d83", "#a5c", "#888"];
    // The floor's "speedups" are harness overhead, not JIT quality: left out.
    let progs: Vec<String> = programs(rep)
        .into_iter()
        .filter(|p| rep.floor.as_ref() != Some(p))
        .filter(|p| series.iter().any(|(n, d)| rep.ratios.iter().any(|r| &r.id.key == p && r.numerator == *n && r.denominator == *d)))
        .collect();
    let bar_h = 12.0;
    let group_h = bar_h * series.len() as f64 + 8.0;
    let (w, left, top) = (900.0, 210.0, 50.0 + 16.0 * series.len() as f64);
    let h = top + group_h * progs.len() as f64 + 20.0;
    let max_speed = rep
        .ratios
        .iter()
        .filter(|r| rep.floor.as_ref() != Some(&r.id.key))
        .filter(|r| series.iter().any(|(n, d)| r.numerator == *n && r.denominator == *d) && r.ratio > 0.0)
        .map(|r| 1.0 / r.ratio)
        .fold(1.5f64, f64::max);
    let scale = (w - left - 70.0) / max_speed;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">Speedup (time of denominator / time of numerator; dashed line = 1.0, right of it is faster)</text>\n"
    );
    for (k, (n, d)) in series.iter().enumerate() {
        let y = 36.0 + 16.0 * k as f64;
        writeln!(
            s,
            "<rect x=\"10\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"28\" y=\"{}\">{} over {}</text>",
            y - 9.0,
            colors[k % colors.len()],
            y,
            xml_escape(n),
            xml_escape(d)
        )
        .unwrap();
    }
    for (i, p) in progs.iter().enumerate() {
        let y0 = top + group_h * i as f64;
        writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", left - 6.0, y0 + group_h / 2.0, xml_escape(p)).unwrap();
        for (k, (n, d)) in series.iter().enumerate() {
            let Some(r) = rep.ratios.iter().find(|r| &r.id.key == p && r.numerator == *n && r.denominator == *d) else {
                continue;
            };
            let sp = if r.ratio > 0.0 { 1.0 / r.ratio } else { 0.0 };
            let y = y0 + bar_h * k as f64;
            writeln!(
                s,
                "<rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{sp:.2}x</text>",
                sp * scale,
                bar_h - 2.0,
                colors[k % colors.len()],
                left + sp * scale + 4.0,
                y + bar_h - 3.0
            )
            .unwrap();
        }
    }
    let x1 = left + scale;
    writeln!(
        s,
        "<line x1=\"{x1:.1}\" y1=\"{}\" x2=\"{x1:.1}\" y2=\"{}\" stroke=\"#000\" stroke-dasharray=\"4\"/>\n</svg>",
        top - 4.0,
        h - 16.0
    )
    .unwrap();
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Why BENCHMARKS.md has no arm64 column.
pub const ARM64_NOTE: &str = "ARM64 is not timed: these are x86-64 machines, where the arm64 JIT's code runs under emulation (unicorn), and emulated times say nothing about arm64 speed.";

/// The generated BENCHMARKS.md: machine, date, command, tables.
pub fn markdown(rep: &Report, machine: &str, date: &str, command: &str) -> String {
    let mut s = String::from("# Benchmarks\n\nGenerated by `kops bench`; do not edit by hand.\n\n");
    writeln!(s, "- date: {date}\n- machine: {machine}\n- command: `{command}`\n").unwrap();
    s.push_str(
        "Times are the median ns per run over interleaved rounds (every round runs each \
         (program, runtime) once, in a fresh random order). Ratios are median/median within \
         this one run; below 1.0 the numerator runtime is faster. `kernel2/kernel` is the \
         identity control: a second, independently loaded copy of the same program on the \
         kernel, so it shows the harness bias. Every runtime's result (r0, output packet, \
         maps) was checked against the oracle before it was timed.\n\n",
    );
    s.push_str(ARM64_NOTE);
    s.push_str("\n\n");
    if let Some(l) = floor_line(rep) {
        writeln!(s, "{}.\n", l[..1].to_uppercase() + &l[1..]).unwrap();
    }
    if let Some(l) = identity_line(rep) {
        writeln!(s, "{}.\n", l[..1].to_uppercase() + &l[1..]).unwrap();
    }
    let rts = runtimes(rep);
    md_header(&mut s, &["program", "stresses"], &rts);
    for p in programs(rep) {
        write!(s, "| {p} | {} |", md_escape(rep.descriptions.get(&p).map(|d| d.as_str()).unwrap_or(""))).unwrap();
        for rt in &rts {
            match rep.results.iter().find(|r| r.id.key == p && &r.runtime == rt) {
                Some(r) => write!(s, " {} |", fmt_ns(r.median_ns)).unwrap(),
                None => s.push_str(" - |"),
            }
        }
        s.push('\n');
    }
    let cols = ratio_columns(rep);
    if !cols.is_empty() {
        s.push('\n');
        md_header(&mut s, &["program"], &cols.iter().map(|c| col_name(c)).collect::<Vec<_>>());
        for p in programs(rep) {
            write!(s, "| {p} |").unwrap();
            for c in &cols {
                match ratio_of(rep, &p, c) {
                    Some(r) => write!(s, " {:.3} [{:.3}, {:.3}] |", r.ratio, r.ci_low, r.ci_high).unwrap(),
                    None => s.push_str(" - |"),
                }
            }
            s.push('\n');
        }
        s.push_str("| **geomean** (bundled, idiom-bearing) |");
        for c in &cols {
            match geomean(rep, &c.0, &c.1) {
                Some((g, n)) => write!(s, " **{g:.3}** (n={n}) |").unwrap(),
                None => s.push_str(" - |"),
            }
        }
        s.push_str("\n\nIn brackets: the 95% bootstrap confidence interval of the ratio (rounds resampled).\n");
        if rep.ratios.iter().any(|r| r.net_of_floor.is_some()) {
            s.push_str(
                "\nThe same ratios net of the harness floor (each runtime's floor time subtracted \
                 from both medians first; the kernel's test-run loop costs more per run than the \
                 userspace loops):\n\n",
            );
            let net_cols: Vec<&(String, String, bool)> = cols.iter().filter(|c| !c.2).collect();
            md_header(&mut s, &["program"], &net_cols.iter().map(|c| col_name(c)).collect::<Vec<_>>());
            for p in programs(rep) {
                if rep.floor.as_deref() == Some(p.as_str()) {
                    continue;
                }
                write!(s, "| {p} |").unwrap();
                for c in &net_cols {
                    match ratio_of(rep, &p, c).and_then(|r| r.net_of_floor) {
                        Some(v) => write!(s, " {v:.3} |").unwrap(),
                        None => s.push_str(" - |"),
                    }
                }
                s.push('\n');
            }
        }
    }
    if !rep.code_bytes.is_empty() {
        let mut crts: Vec<String> = Vec::new();
        for c in &rep.code_bytes {
            if !crts.contains(&c.runtime) {
                crts.push(c.runtime.clone());
            }
        }
        s.push_str("\nStatic native code size in bytes (the functions only; the kernel's jited image after its verifier rewrites):\n\n");
        md_header(&mut s, &["program"], &crts);
        for p in programs(rep) {
            if !rep.code_bytes.iter().any(|c| c.id.key == p) {
                continue;
            }
            write!(s, "| {p} |").unwrap();
            for rt in &crts {
                match rep.code_bytes.iter().find(|c| c.id.key == p && &c.runtime == rt) {
                    Some(c) => write!(s, " {} |", c.bytes).unwrap(),
                    None => s.push_str(" - |"),
                }
            }
            s.push('\n');
        }
    }
    if !rep.mismatches.is_empty() {
        s.push_str("\nMismatches (results differ from the oracle; not timed):\n\n");
        for m in &rep.mismatches {
            writeln!(s, "- {} on {} vs {}: {}", m.id.key, m.runtime, m.oracle, m.detail).unwrap();
        }
    }
    if !rep.skipped.is_empty() {
        s.push_str("\nNot measured:\n\n");
        for k in &rep.skipped {
            writeln!(s, "- {} on {}: {}", k.id.key, k.runtime, k.reason).unwrap();
        }
    }
    if !rep.notes.is_empty() {
        s.push_str("\nNotes:\n\n");
        for n in &rep.notes {
            writeln!(s, "- {n}").unwrap();
        }
    }
    s
}

/// A Markdown table header: the left-aligned `first` columns, then the right-aligned
/// (numeric) columns `right`.
fn md_header(s: &mut String, first: &[&str], right: &[String]) {
    s.push('|');
    for c in first {
        write!(s, " {c} |").unwrap();
    }
    for c in right {
        write!(s, " {c} |").unwrap();
    }
    s.push_str("\n|");
    for _ in first {
        s.push_str("---|");
    }
    for _ in right {
        s.push_str("---:|");
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report;

    fn rep() -> Report {
        let r = crate::case;
        let results = vec![
            r("rot", "kernel", 2000.0),
            r("rot", "kops", 1000.0),
            r("sel", "kernel", 1000.0),
            r("sel", "kops", 2000.0),
            r("ctl", "kernel", 1000.0),
            r("ctl", "kops", 4000.0),
        ];
        let ratios = crate::ratios(&results, &[("kops", "kernel", false)]);
        let mut rep = Report { results, ratios, ..Report::default() };
        rep.descriptions.insert("ctl".into(), "control: no idiom".into());
        rep.descriptions.insert("rot".into(), "rotate64".into());
        rep.descriptions.insert("sel".into(), "select".into());
        rep
    }

    #[test]
    fn json_has_results_and_ratios() {
        let v: serde_json::Value = serde_json::from_str(&json(&rep())).unwrap();
        assert_eq!(v["results"][0]["median_ns"], 2000.0);
        assert_eq!(v["ratios"][0]["ratio"], 0.5);
        assert_eq!(v["ratios"][0]["identity"], false);
    }

    #[test]
    fn svg_shows_speedup_two() {
        let s = svg(&rep(), &[("kops", "kernel")]);
        assert!(s.contains(">2.00x<"), "{s}");
        assert!(s.contains(">0.50x<"), "{s}");
    }

    #[test]
    fn markdown_table_row() {
        let m = markdown(&rep(), "m", "d", "c");
        assert!(m.contains("| rot | rotate64 | 2.00 µs | 1.00 µs |"), "{m}");
    }

    #[test]
    fn identity_line_names_programs_off_by_more_than_three_percent() {
        let mut r = rep();
        r.ratios = vec![("rot", 1.02), ("sel", 0.95)]
            .into_iter()
            .map(|(p, x)| Ratio {
                id: crate::ProgId::new("o.bpf.o", p),
                numerator: "kernel2".into(),
                denominator: "kernel".into(),
                ratio: x,
                ci_low: x,
                ci_high: x,
                min: x,
                max: x,
                identity: true,
                net_of_floor: None,
                instructions_ratio: None,
            })
            .collect();
        let l = identity_line(&r).unwrap();
        assert!(l.contains("within 3% of 1.0 on 1 of 2 programs; outside: sel 0.950"), "{l}");
    }

    #[test]
    fn geomean_leaves_out_controls() {
        // rot 0.5 and sel 2.0: geometric mean 1.0; the control (4.0) must not count.
        let (g, n) = geomean(&rep(), "kops", "kernel").unwrap();
        assert_eq!(n, 2);
        assert!((g - 1.0).abs() < 1e-12, "{g}");
    }
}
