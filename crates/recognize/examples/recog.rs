//! Development aid: `cargo run -p kops-recognize --example recog -- FILE.o [auto|all|none]`
//! prints every site and rejected candidate (the `kops inspect` command does the same).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let obj = kops_object::Object::load(&args[1]).expect("load");
    let mode = kops_recognize::Mode::parse(args.get(2).map(|s| s.as_str()).unwrap_or("auto")).unwrap();
    let pol = kops_recognize::Policy { mode, ..Default::default() };
    let (new, rep, _) = kops_recognize::rewrite_object(&obj, &pol).expect("rewrite");
    if std::env::var("KOPS_DUMP").is_ok() {
        for (p, q) in obj.programs.iter().zip(&new.programs) {
            println!("--- {} before", p.name);
            dump(p);
            println!("--- {} after", q.name);
            dump(q);
        }
    }
    for p in &rep.programs {
        println!("program {} ({} -> {} slots)", p.name, p.insns_before, p.insns_after);
        for s in &p.sites {
            println!("  {:9} [{}, {}) {} {} {} ({}) {:?}", s.pass, s.start, s.end, s.op, if s.rewrite { "REWRITE" } else { "keep" }, s.saving, s.reason, s.line);
        }
        for r in &p.rejected {
            println!("  rejected {} [{}, {}): {}", r.pass, r.start, r.end, r.reason);
        }
    }
    println!("{} sites in {} programs", rep.total_sites(), rep.programs.len());
}

/// `KOPS_DUMP=1`: print the programs before (and after) rewriting.
#[allow(dead_code)]
fn dump(p: &kops_object::Program) {
    for pc in 0..p.insns.len() {
        println!("{pc:5}: {}", kops_isa::disasm::format(&p.insns, pc));
    }
}
