//! The kernels a spec names (`EGRESS_VM_KERNEL`, `EGRESS_VM_KERNELS`): a family of kernel
//! packages, whose newest is taken, or one package by name. The families:
//!
//! | spec | packages | Linux |
//! |---|---|---|
//! | `debian:bookworm` (the default) | `linux-image-6.1.0-<N>-cloud-amd64-unsigned`, from the host's apt | 6.1 |
//! | `debian:bullseye` | `linux-image-5.10.0-<N>-cloud-amd64-unsigned`, from Debian's archive | 5.10 |
//! | `ubuntu:jammy` | `linux-image-5.15.0-<N>-generic` and its `linux-modules-`, from Ubuntu's jammy and jammy-updates | 5.15 |
//!
//! `<spec>:<package>` takes that package of a family's archive; a bare package name, that
//! package from the host's apt (e.g. a 6.12 from bookworm-backports).

use anyhow::{Context as _, Result, bail};

use super::archive::{self, Archive, Keyring};

/// Where a family's packages come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// The host's own apt (Debian 12's archive, as the host's sources list has it).
    Host,
    /// Another archive, through a private apt configuration.
    Archive(Archive),
}

/// A family of kernel packages: `<prefix><N><suffix>`, the newest `<N>` taken.
#[derive(Debug)]
pub(crate) struct Family {
    /// Its spec, e.g. `ubuntu:jammy`.
    pub(crate) spec: &'static str,
    pub(crate) source: Source,
    pub(crate) prefix: &'static str,
    pub(crate) suffix: &'static str,
    /// Packages that come with the image, named by the image's name past `linux-image-`
    /// (Ubuntu's modules are a package of their own).
    pub(crate) with: &'static [&'static str],
}

/// The families a spec names.
pub(crate) const FAMILIES: [Family; 3] = [
    // Linux 6.1, the newest kernel without TCX that Debian ships (Debian 12's), built for
    // cloud VMs (no firmware, few drivers: a small download).
    Family {
        spec: "debian:bookworm",
        source: Source::Host,
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64-unsigned",
        with: &[],
    },
    // Linux 5.10 (Debian 11): lacks what pod and node mode need (bpf_check_mtu, 5.12).
    Family {
        spec: "debian:bullseye",
        source: Source::Archive(Archive {
            name: "debian-bullseye",
            url: "http://deb.debian.org/debian",
            suites: &["bullseye"],
            keyring: Keyring::Host("/usr/share/keyrings/debian-archive-keyring.gpg"),
        }),
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64-unsigned",
        with: &[],
    },
    // Linux 5.15 (Ubuntu 22.04: AKS, many on-premises clusters). The lab's modules are in
    // `linux-modules-`; `linux-modules-extra-` (64 MB) holds none of them.
    Family {
        spec: "ubuntu:jammy",
        source: Source::Archive(Archive {
            name: "ubuntu-jammy",
            url: "http://archive.ubuntu.com/ubuntu",
            suites: &["jammy", "jammy-updates"],
            keyring: Keyring::Armored(archive::UBUNTU_ARCHIVE_2018),
        }),
        prefix: "linux-image-5.15.0-",
        suffix: "-generic",
        with: &["linux-modules-"],
    },
];

/// The family booted when no spec is given.
pub(crate) const DEFAULT: &str = "debian:bookworm";

/// What a spec names: a family's newest package, or one package.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) family: &'static Family,
    pub(crate) package: Option<String>,
}

/// The family of a bare package name: the host's apt, the package alone.
static ANY: Family = Family {
    spec: "",
    source: Source::Host,
    prefix: "linux-image-",
    suffix: "",
    with: &[],
};

impl Spec {
    /// `debian:bookworm`, `ubuntu:jammy:linux-image-5.15.0-100-generic`, or a package name.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(family) = FAMILIES.iter().find(|f| text.starts_with(f.spec)) {
            let package = match &text[family.spec.len()..] {
                "" => None,
                rest => Some(
                    rest.strip_prefix(':')
                        .filter(|p| p.starts_with(family.prefix))
                        .with_context(|| format!("{text}: not a package of {}", family.spec))?
                        .to_owned(),
                ),
            };
            return Ok(Self { family, package });
        }
        if text.contains(':') || !text.starts_with("linux-image-") {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.spec).collect();
            bail!(
                "{text}: not a kernel (one of {}, `<that>:<package>`, or a package name of the host's apt)",
                known.join(", ")
            );
        }
        Ok(Self {
            family: &ANY,
            package: Some(text.to_owned()),
        })
    }
}

pub(crate) fn newest_of(apt_cache_search: &str, family: &Family) -> Option<String> {
    apt_cache_search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| Some((number(family, name)?, name.to_owned())))
        .max()
        .map(|(_, name)| name)
}

/// `<N>` of a package of the family.
pub(crate) fn number(family: &Family, package: &str) -> Option<u32> {
    package
        .strip_prefix(family.prefix)?
        .strip_suffix(family.suffix)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(spec: &str) -> &'static Family {
        Spec::parse(spec).unwrap().family
    }

    #[test]
    fn the_newest_kernel_of_each_family_is_chosen() {
        let listed = "linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                      linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                      linux-image-6.1.0-57-cloud-amd64-dbg - Debug symbols\n\
                      linux-image-6.1.0-60-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                      linux-image-6.12.118+deb12-cloud-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            newest_of(listed, family("debian:bookworm")).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(newest_of("nothing here", family("debian:bookworm")), None);
        let jammy = "linux-image-5.15.0-99-generic - Signed kernel image generic\n\
                     linux-image-5.15.0-208-generic - Signed kernel image generic\n\
                     linux-image-5.15.0-208-lowlatency - Signed kernel image lowlatency\n";
        assert_eq!(
            newest_of(jammy, family("ubuntu:jammy")).as_deref(),
            Some("linux-image-5.15.0-208-generic")
        );
        assert_eq!(newest_of(listed, family("debian:bullseye")), None);
    }

    #[test]
    fn specs_name_a_family_or_a_package() {
        let spec = Spec::parse("ubuntu:jammy").unwrap();
        assert_eq!((spec.family.spec, spec.package), ("ubuntu:jammy", None));
        let spec =
            Spec::parse("debian:bullseye:linux-image-5.10.0-30-cloud-amd64-unsigned").unwrap();
        assert_eq!(spec.family.spec, "debian:bullseye");
        assert_eq!(
            spec.package.as_deref(),
            Some("linux-image-5.10.0-30-cloud-amd64-unsigned")
        );
        let spec = Spec::parse("linux-image-6.12.38+deb12-cloud-amd64-unsigned").unwrap();
        assert!(matches!(spec.family.source, Source::Host));
        assert!(Spec::parse("ubuntu:noble").is_err());
        assert!(Spec::parse("ubuntu:jammy:linux-image-6.1.0-1-generic").is_err());
    }
}
