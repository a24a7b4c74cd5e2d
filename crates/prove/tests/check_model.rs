//! The prover's x86-64 model against this CPU (`kops prove --check-model`): every form the
//! model accepts, on random concrete states, with zero disagreements; and the checker
//! itself reports a disagreement when the model and the CPU run different code.

use kops_prove::check_model::{check_all, check_pair, forms, FormReport, Options};

fn opts(states: usize) -> Options {
    Options { states, z3_sample: 4, ..Options::default() }
}

#[test]
fn every_form_of_the_model_agrees_with_the_cpu() {
    let t0 = std::time::Instant::now();
    let set = forms();
    assert!(set.unbuilt.is_empty(), "forms of the model the checker cannot build: {:?}", set.unbuilt);
    assert!(set.emitted_outside_model.is_empty(), "emitted forms the model refuses: {:?}", set.emitted_outside_model);
    // The forms the emits rely on, by name: the enumeration must not silently lose them.
    for want in [
        "rol r64, imm8 ",
        "rorx r64, r64, imm8 ",
        "cmovne r64, r64 ",
        "movbe r32, m32 ",
        "popcnt r64, r64 ",
        "bswap r32 ",
        "bswap r64 ",
        "bextr r64a, r64, r64b ",
        "shr r64, imm8 ",
        "and r32, imm8 ",
        "rep movsb ",
        "rep movsq ",
        "rep stosb ",
        "lea r64, m ",
        "push r64 ",
        "pop r64 ",
        "test r64, r64 ",
        "cmp r64, r64 ",
        "movzx r32, m8 ",
        "prefetcht0 m8 ",
        "lfence ",
        "cld ",
        "std ",
        "sete r8 ",
        "je rel8 ",
        "jne rel32 ",
        "jmp rel8 ",
    ] {
        assert!(set.forms.iter().any(|f| f.name.starts_with(want)), "no form `{want}` in the model");
    }
    assert!(set.forms.iter().filter(|f| f.in_emits).count() >= 50, "emitted forms not found");
    assert!(set.forms.len() > 600, "only {} forms", set.forms.len());

    let states = 300;
    let reports = check_all(&set, &opts(states), |_| {}).unwrap();
    // One report per form of the model, each with all its states run.
    assert_eq!(reports.len(), set.forms.len());
    let short: Vec<&FormReport> = reports.iter().filter(|r| r.states < states).collect();
    assert!(short.is_empty(), "forms run on fewer states: {:?}", short.iter().map(|r| &r.name).collect::<Vec<_>>());
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.disagreements > 0)
        .flat_map(|r| r.examples.iter().map(|d| d.to_string()))
        .collect();
    let total: usize = reports.iter().map(|r| r.disagreements).sum();
    let s: usize = reports.iter().map(|r| r.states).sum();
    eprintln!("{} forms, {s} states, {total} disagreements in {:.1}s", reports.len(), t0.elapsed().as_secs_f64());
    assert_eq!(total, 0, "{}", bad.join("\n"));
}

fn pair(cpu: &[u8], model: &[u8]) -> FormReport {
    check_pair(cpu, model, &opts(200)).unwrap()
}

fn mentions(r: &FormReport, what: &str) -> bool {
    r.examples.iter().any(|d| d.differs.iter().any(|x| x.contains(what)))
}

#[test]
fn same_code_agrees() {
    // add rax, rbx / mov [rdi+8], rax / push rax
    for code in [&[0x48, 0x01, 0xd8][..], &[0x48, 0x89, 0x47, 0x08], &[0x50]] {
        let r = pair(code, code);
        assert_eq!(r.disagreements, 0, "{:?}", r.examples);
        assert_eq!(r.states, 200);
    }
}

#[test]
fn model_of_another_rotate_disagrees_in_the_register() {
    // CPU: rol rax, 5; model: ror rax, 5.
    let r = pair(&[0x48, 0xc1, 0xc0, 0x05], &[0x48, 0xc1, 0xc8, 0x05]);
    assert!(r.disagreements > 150, "{}", r.disagreements);
    assert!(mentions(&r, "rax: cpu"), "{:?}", r.examples);
    // The report names the state: every input register and the flags.
    let d = &r.examples[0];
    assert!(d.state.contains("rax=") && d.state.contains("r15=") && d.state.contains("ZF="), "{}", d.state);
}

#[test]
fn model_storing_one_byte_off_disagrees_in_memory() {
    // CPU: mov [rdi+8], rax; model: mov [rdi+9], rax.
    let r = pair(&[0x48, 0x89, 0x47, 0x08], &[0x48, 0x89, 0x47, 0x09]);
    assert!(r.disagreements > 150);
    assert!(mentions(&r, "data memory"), "{:?}", r.examples);
}

#[test]
fn swapped_compare_disagrees_in_the_flags() {
    // CPU: cmp rax, rbx; model: cmp rbx, rax. Registers agree, flags do not.
    let r = pair(&[0x48, 0x39, 0xd8], &[0x48, 0x39, 0xc3]);
    assert!(r.disagreements > 50);
    assert!(mentions(&r, "CF: cpu") || mentions(&r, "SF: cpu"), "{:?}", r.examples);
    assert!(!mentions(&r, "rax: cpu"));
}

#[test]
fn wrong_push_disagrees_on_the_stack_and_wrong_direction_flag_is_seen() {
    // CPU: push rax; model: push rbx.
    let r = pair(&[0x50], &[0x53]);
    assert!(mentions(&r, "stack memory"), "{:?}", r.examples);
    // CPU: std; model: cld.
    let r = pair(&[0xfd], &[0xfc]);
    assert!(mentions(&r, "DF: cpu 1, model 0"), "{:?}", r.examples);
}

#[test]
fn perturbed_cpu_result_is_reported() {
    let o = Options { states: 100, z3_sample: 2, perturb: Some(|st| st.gpr[0] ^= 1), ..Options::default() };
    let r = check_pair(&[0x48, 0x01, 0xd8], &[0x48, 0x01, 0xd8], &o).unwrap();
    assert_eq!(r.disagreements, 100);
    assert!(mentions(&r, "rax: cpu"));
}
