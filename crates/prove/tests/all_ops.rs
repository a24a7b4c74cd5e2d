//! Every EInsn op, every payload class, every variant (temporaries live/dead, each CPU
//! feature set): the emitted x86-64 bytes are proven equal to the proof sequence.
//! This is the whole of `kops prove --arch x86_64`, not a sample.

use kops_prove::einsn::prove_class;
use kops_prove::Verdict;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[test]
fn every_class_of_every_op_is_proven() {
    let reg = kops_einsn::registry();
    let work: Vec<_> = reg.iter().flat_map(|op| op.classes().into_iter().map(move |c| (op.clone(), c))).collect();
    assert!(work.len() > 3000, "class enumeration shrank to {}", work.len());
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let proven = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((op, c)) = work.get(i) else { break };
                for o in prove_class(op.as_ref(), c) {
                    match o.verdict {
                        Ok(Verdict::Proven) => {
                            proven.fetch_add(1, Ordering::Relaxed);
                        }
                        v => failures.lock().unwrap().push(format!("{} {} [{}]: {v:?}", op.name(), o.label, o.variant)),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!("{} proven, {} failed", proven.load(Ordering::Relaxed), failures.len());
    assert!(failures.is_empty(), "{:#?}", &failures[..failures.len().min(10)]);
}
