//! `cargo run -p kops-object --example objdump -- FILE.o...`: what the loader sees.
fn main() {
    let mut rc = 0;
    for path in std::env::args().skip(1) {
        match kops_object::Object::load(&path) {
            Ok(o) => {
                println!("{path}: license {:?}, version {:#x}, btf {}, btf.ext {}", o.license, o.kernel_version, o.btf.is_some(), o.has_btf_ext);
                for (i, m) in o.maps.iter().enumerate() {
                    println!(
                        "  map {i} {} type {} key {} value {} max {} flags {:#x} {:?} pin {} btf {}/{} slots {:?}",
                        m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.flags, m.origin, m.pinning,
                        m.btf_key_type_id, m.btf_value_type_id, m.init_slots
                    );
                }
                for p in &o.programs {
                    println!(
                        "  prog {} [{}] {:?}/{} attach {} insns {} func_info {} line_info {}",
                        p.name, p.section, p.prog_type, p.prog_type_id, p.expected_attach_type, p.insns.len(),
                        p.func_info.len(), p.line_info.len()
                    );
                    for s in &p.subprogs {
                        println!("    sub {} @{} len {} from {}+{}", s.name, s.start, s.len, s.section, s.sec_start);
                    }
                    if std::env::var_os("INSNS").is_some() {
                        for (i, insn) in p.insns.iter().enumerate() {
                            println!("    {i:4}: {insn:?}");
                        }
                        for f in &p.func_info {
                            println!("    func_info {f:?}");
                        }
                        for l in &p.line_info {
                            println!("    line {} {}:{}:{} {:?}", l.insn_off, l.file, l.line(), l.column(), l.source_line);
                        }
                    }
                }
            }
            Err(e) => {
                println!("ERROR {e}");
                rc = 1;
            }
        }
    }
    std::process::exit(rc);
}
