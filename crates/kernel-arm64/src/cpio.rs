//! The initramfs: a `newc` cpio archive (the format the kernel unpacks, see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst) holding the loader as
//! `/init`, the batch as `/jobs.bin` and a `/dev/console` node.

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

enum Kind<'a> {
    Dir,
    File(&'a [u8], u32),
    CharDev(u32, u32),
}

pub(crate) struct Archive {
    out: Vec<u8>,
    ino: u32,
}

impl Archive {
    pub(crate) fn new() -> Archive {
        Archive { out: Vec::new(), ino: 1 }
    }

    fn entry(&mut self, name: &str, kind: Kind) -> Result<(), String> {
        let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match kind {
            Kind::Dir => (S_IFDIR | 0o755, &[], (0, 0)),
            Kind::File(d, perm) => (S_IFREG | perm, d, (0, 0)),
            Kind::CharDev(major, minor) => (S_IFCHR | 0o600, &[], (major, minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| format!("initramfs: `{name}` is larger than 4 GiB"))?;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        self.ino += 1;
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub(crate) fn dir(&mut self, name: &str) -> Result<(), String> {
        self.entry(name, Kind::Dir)
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8], perm: u32) -> Result<(), String> {
        self.entry(name, Kind::File(data, perm))
    }

    pub(crate) fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> Result<(), String> {
        self.entry(name, Kind::CharDev(major, minor))
    }

    pub(crate) fn finish(mut self) -> Result<Vec<u8>, String> {
        self.entry("TRAILER!!!", Kind::Dir)?;
        Ok(self.out)
    }
}

/// The initramfs for one batch.
pub(crate) fn initramfs(loader: &[u8], batch: &[u8]) -> Result<Vec<u8>, String> {
    let mut a = Archive::new();
    a.dir("dev")?;
    a.char_dev("dev/console", 5, 1)?;
    a.dir("proc")?;
    a.dir("sys")?;
    a.file("init", loader, 0o755)?;
    a.file("jobs.bin", batch, 0o644)?;
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = initramfs(b"ELF", b"KOPSBAT1\0\0\0\0").unwrap();
        assert_eq!(&a[..6], b"070701");
        assert_eq!(a.len() % 4, 0);
        // Every header starts on a 4-byte boundary: walk the archive.
        let mut at = 0;
        let mut names = Vec::new();
        while at < a.len() {
            assert_eq!(&a[at..at + 6], b"070701", "header at {at}");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&a[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap(), 16).unwrap()
            };
            let (size, namesize) = (field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&a[at + 110..at + 110 + namesize - 1]).unwrap().to_string();
            at = (at + 110 + namesize).div_ceil(4) * 4;
            at = (at + size).div_ceil(4) * 4;
            names.push(name);
        }
        assert_eq!(names, ["dev", "dev/console", "proc", "sys", "init", "jobs.bin", "TRAILER!!!"]);
    }
}
