//! Reading the verifier log: which instruction a rejection points at, and the message.

/// What a verifier log says about a rejection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifierMessage {
    /// Slot index of the instruction the verifier was at (the last `N: (op) ...` line), or
    /// the index named in a message such as `back-edge from insn 5 to 3`.
    pub insn: Option<usize>,
    /// The kernel's own rendering of that instruction (`r3 = *(u8 *)(r2 +0)`).
    pub insn_text: Option<String>,
    /// The lines after the last instruction line, without the statistics lines.
    pub message: String,
}

/// `N: (op) text`, as the verifier prints each instruction it walks.
fn insn_line(line: &str) -> Option<(usize, String)> {
    let (n, rest) = line.split_once(": (")?;
    let n: usize = n.trim().parse().ok()?;
    let (op, text) = rest.split_once(") ")?;
    if op.len() != 2 || !op.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // Level-2 logs append `; R1=...` state after the instruction.
    let text = match text.find("\t;") {
        Some(i) => &text[..i],
        None => text.split("  ; ").next().unwrap_or(text),
    };
    Some((n, text.trim().to_string()))
}

fn is_noise(line: &str) -> bool {
    let t = line.trim();
    t.is_empty()
        || t.starts_with("processed ")
        || t.starts_with("verification time")
        || t.starts_with("stack depth")
        || t.starts_with("-- END PROG LOAD LOG --")
        // register state dumps: `5: R1=ctx() R10=fp0` or `from 3 to 5: ...`
        || t.starts_with("from ")
        || t.split_once(": R").map(|(n, _)| n.parse::<usize>().is_ok()).unwrap_or(false)
        || t.split_once(":").map(|(n, r)| n.parse::<usize>().is_ok() && r.trim().is_empty()).unwrap_or(false)
        // source lines from line_info: `; return x; @ file.c:12`
        || t.starts_with("; ")
}

/// Finds the instruction index in messages that name one (`... insn 5 ...`).
fn insn_in_text(msg: &str) -> Option<usize> {
    let words: Vec<&str> = msg.split(|c: char| c.is_whitespace() || c == ',').collect();
    for w in words.windows(2) {
        if w[0] == "insn" || w[0] == "insn_idx" {
            if let Ok(n) = w[1].trim_end_matches(|c: char| !c.is_ascii_digit()).parse() {
                return Some(n);
            }
        }
    }
    None
}

pub fn parse_log(log: &str) -> VerifierMessage {
    let lines: Vec<&str> = log.lines().collect();
    let mut last: Option<(usize, usize, String)> = None;
    for (i, l) in lines.iter().enumerate() {
        if let Some((n, text)) = insn_line(l) {
            last = Some((i, n, text));
        }
    }
    let from = last.as_ref().map(|(i, _, _)| i + 1).unwrap_or(0);
    let message: Vec<&str> = lines[from..].iter().copied().filter(|l| !is_noise(l)).collect();
    let message = message.join("\n").trim().to_string();
    match last {
        Some((_, n, text)) => VerifierMessage { insn: Some(n), insn_text: Some(text), message },
        None => VerifierMessage { insn: insn_in_text(&message), insn_text: None, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes of real 6.x logs (copied from kernel output by hand, level 1).
    #[test]
    fn last_insn_and_message() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2_w=pkt(r=0)\n1: (71) r0 = *(u8 *)(r2 +0)\ninvalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)\nR2 offset is outside of the packet\nprocessed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";
        let m = parse_log(log);
        assert_eq!(m.insn, Some(1));
        assert_eq!(m.insn_text.as_deref(), Some("r0 = *(u8 *)(r2 +0)"));
        assert_eq!(
            m.message,
            "invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)\nR2 offset is outside of the packet"
        );
    }

    #[test]
    fn message_without_insn_lines() {
        let m = parse_log("back-edge from insn 5 to 3\nprocessed 0 insns\n");
        assert_eq!(m.insn, Some(5));
        assert_eq!(m.message, "back-edge from insn 5 to 3");
        let m = parse_log("last insn is not an exit or jmp\n");
        assert_eq!(m.insn, None);
    }
}
