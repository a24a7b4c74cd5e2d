//! CPU feature detection for JIT-time choices (BMI2 shifts, native kinsn emits).
//!
//! `CpuFeatures::detect()` reads CPUID and then masks every feature named in the environment
//! variable `KOPS_DISABLE_FEATURES` (comma-separated, e.g. `popcnt,movbe,bmi1,bmi2`), so that
//! fallback paths can be exercised on a machine that has the features.

use std::fmt;

/// One CPU feature that some emit depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    Popcnt,
    Movbe,
    Bmi1,
    Bmi2,
    Lzcnt,
    /// Enhanced `rep movsb/stosb`.
    Erms,
    /// Fast short `rep movsb`.
    Fsrm,
}

impl Feature {
    pub const ALL: [Feature; 7] = [
        Feature::Popcnt,
        Feature::Movbe,
        Feature::Bmi1,
        Feature::Bmi2,
        Feature::Lzcnt,
        Feature::Erms,
        Feature::Fsrm,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Feature::Popcnt => "popcnt",
            Feature::Movbe => "movbe",
            Feature::Bmi1 => "bmi1",
            Feature::Bmi2 => "bmi2",
            Feature::Lzcnt => "lzcnt",
            Feature::Erms => "erms",
            Feature::Fsrm => "fsrm",
        }
    }
    pub fn from_name(s: &str) -> Option<Feature> {
        Feature::ALL.iter().copied().find(|f| f.name() == s)
    }
    fn bit(self) -> u32 {
        1 << self as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KOPS_DISABLE_FEATURES: unknown CPU feature `{name}` (known: popcnt, movbe, bmi1, bmi2, lzcnt, erms, fsrm)")]
pub struct FeatureError {
    pub name: String,
}

/// A set of CPU features.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuFeatures {
    bits: u32,
}

impl fmt::Debug for CpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|x| x.name())).finish()
    }
}

impl fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(|x| x.name()).collect();
        if names.is_empty() {
            write!(f, "(none)")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

impl CpuFeatures {
    /// No feature at all: every emit takes its baseline path.
    pub const NONE: CpuFeatures = CpuFeatures { bits: 0 };

    pub fn all() -> CpuFeatures {
        CpuFeatures::from_iter(Feature::ALL)
    }
    pub fn has(self, f: Feature) -> bool {
        self.bits & f.bit() != 0
    }
    pub fn with(self, f: Feature) -> CpuFeatures {
        CpuFeatures { bits: self.bits | f.bit() }
    }
    pub fn without(self, f: Feature) -> CpuFeatures {
        CpuFeatures { bits: self.bits & !f.bit() }
    }
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.has(*f))
    }

    /// What the CPU reports, without masking.
    pub fn host() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        #[allow(unused_unsafe)] // `__cpuid` is safe on newer toolchains
        {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            let mut s = CpuFeatures::NONE;
            // SAFETY: CPUID exists on every x86-64 CPU; leaves above the reported maximum
            // are not queried.
            let max = unsafe { __cpuid(0) }.eax;
            let l1 = unsafe { __cpuid(1) };
            if l1.ecx & (1 << 22) != 0 {
                s = s.with(Feature::Movbe);
            }
            if l1.ecx & (1 << 23) != 0 {
                s = s.with(Feature::Popcnt);
            }
            if max >= 7 {
                let l7 = unsafe { __cpuid_count(7, 0) };
                if l7.ebx & (1 << 3) != 0 {
                    s = s.with(Feature::Bmi1);
                }
                if l7.ebx & (1 << 8) != 0 {
                    s = s.with(Feature::Bmi2);
                }
                if l7.ebx & (1 << 9) != 0 {
                    s = s.with(Feature::Erms);
                }
                if l7.edx & (1 << 4) != 0 {
                    s = s.with(Feature::Fsrm);
                }
            }
            let maxe = unsafe { __cpuid(0x8000_0000) }.eax;
            if maxe >= 0x8000_0001 && unsafe { __cpuid(0x8000_0001) }.ecx & (1 << 5) != 0 {
                s = s.with(Feature::Lzcnt);
            }
            s
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures::NONE
        }
    }

    /// Parse a comma-separated list of feature names (empty entries ignored).
    pub fn parse_list(list: &str) -> Result<CpuFeatures, FeatureError> {
        let mut s = CpuFeatures::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            let f = Feature::from_name(&lower)
                .ok_or_else(|| FeatureError { name: name.to_string() })?;
            s = s.with(f);
        }
        Ok(s)
    }

    /// Host features minus those named in `KOPS_DISABLE_FEATURES`.
    pub fn detect() -> Result<CpuFeatures, FeatureError> {
        let masked = match std::env::var("KOPS_DISABLE_FEATURES") {
            Ok(v) => CpuFeatures::parse_list(&v)?,
            Err(_) => CpuFeatures::NONE,
        };
        Ok(CpuFeatures { bits: CpuFeatures::host().bits & !masked.bits })
    }
}

impl FromIterator<Feature> for CpuFeatures {
    fn from_iter<T: IntoIterator<Item = Feature>>(iter: T) -> Self {
        iter.into_iter().fold(CpuFeatures::NONE, |s, f| s.with(f))
    }
}
