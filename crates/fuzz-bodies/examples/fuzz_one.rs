//! Run fuzz inputs through a body under stable, e.g. to reproduce a crash found by
//! `cargo fuzz`: `cargo run --release -p kops-fuzz-bodies --example fuzz_one -- rewrite FILE...`
fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: fuzz_one TARGET FILE...");
    let body: fn(&[u8]) = match target.as_str() {
        "decode" => kops_fuzz_bodies::decode,
        "object" => kops_fuzz_bodies::object,
        "rewrite" => kops_fuzz_bodies::rewrite,
        "jit_vs_interp" => kops_fuzz_bodies::jit_vs_interp,
        t => panic!("unknown target {t} (decode, object, rewrite, jit_vs_interp)"),
    };
    for f in args {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        body(&data);
        println!("{f}: ok");
    }
}
