#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kops_fuzz_bodies::jit_vs_interp(data));
