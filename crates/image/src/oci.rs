//! The image itself: one layer holding the program, the image config, the OCI manifest.
//! Deterministic: no timestamps (tar entries and gzip header at 0, no `created`), uid and gid 0,
//! fixed modes, so the same program always gives the same digests.

use std::io::Write as _;

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The media types this crate writes (OCI image spec v1).
pub mod media_type {
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A gzip-compressed tar layer.
    pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
}

/// The CPU architecture of the program and the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// x86-64 (`amd64`; Fargate's `X86_64`).
    Amd64,
    /// 64-bit ARM (`arm64`; Fargate's `ARM64`, Graviton).
    Arm64,
}

impl Architecture {
    /// The name in the image config (`amd64`, `arm64`).
    pub fn as_oci(self) -> &'static str {
        match self {
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
        }
    }

    /// The ELF `e_machine` of programs for it.
    fn elf_machine(self) -> u16 {
        match self {
            Architecture::Amd64 => 0x3e,
            Architecture::Arm64 => 0xb7,
        }
    }

    /// The architecture this code runs on, if it is one of these.
    pub fn of_host() -> Option<Architecture> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Architecture::Amd64),
            "aarch64" => Some(Architecture::Arm64),
            _ => None,
        }
    }
}

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The program: a statically linked ELF executable for `architecture` (the image has no
    /// libc and no loader).
    pub program: Vec<u8>,
    /// Where it goes in the image, absolute (`/sample-app`); it is the entrypoint.
    pub path: String,
    /// The CPU architecture.
    pub architecture: Architecture,
    /// Environment of the container, `NAME=value` pairs in order.
    pub env: Vec<(String, String)>,
    /// TCP ports the image documents as exposed.
    pub exposed_ports: Vec<u16>,
    /// The user the program runs as (`uid:gid`). Default `65532:65532`, not root.
    pub user: String,
}

impl ImageSpec {
    /// `program` at `path` for `architecture`, run as 65532:65532, no environment or ports.
    pub fn new(program: Vec<u8>, path: &str, architecture: Architecture) -> Self {
        Self {
            program,
            path: path.to_owned(),
            architecture,
            env: Vec::new(),
            exposed_ports: Vec::new(),
            user: "65532:65532".to_owned(),
        }
    }
}

/// Content-addressed bytes: a layer, a config or a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its media type.
    pub media_type: &'static str,
    /// `sha256:` and the hex SHA-256 of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Bytes,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        Self {
            media_type,
            digest: sha256_digest(&data),
            data: Bytes::from(data),
        }
    }

    /// The manifest's descriptor of it.
    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.data.len() })
    }
}

/// `sha256:{hex}` of `data`, as registries name blobs.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    out
}

/// A built image, ready to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The layers, base first (here: one, the program).
    pub layers: Vec<Blob>,
    /// The image config.
    pub config: Blob,
    /// The manifest; its digest is the image's.
    pub manifest: Blob,
}

impl Image {
    /// Builds the image of `spec`; checks first that the program is a static executable for
    /// the architecture and that the path is usable.
    pub fn build(spec: &ImageSpec) -> Result<Image, Error> {
        let path = check_path(&spec.path)?;
        check_program(&spec.program, spec.architecture)?;
        check_user(&spec.user)?;
        let tar = layer_tar(path, &spec.program)?;
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).map_err(Error::Layer)?;
        let layer = Blob::new(media_type::LAYER, gz.finish().map_err(Error::Layer)?);

        let env: Vec<String> = std::iter::once("PATH=/".to_owned())
            .chain(spec.env.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        let ports: serde_json::Map<String, serde_json::Value> = spec
            .exposed_ports
            .iter()
            .map(|p| (format!("{p}/tcp"), json!({})))
            .collect();
        let config = json!({
            "architecture": spec.architecture.as_oci(),
            "os": "linux",
            "config": {
                "Entrypoint": [spec.path],
                "Env": env,
                "ExposedPorts": ports,
                "User": spec.user,
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": format!("stackproof image: {} ({} bytes)", spec.path, spec.program.len()) }],
        });
        let config = Blob::new(media_type::CONFIG, config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type::MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        });
        let manifest = Blob::new(media_type::MANIFEST, manifest.to_string().into_bytes());
        Ok(Image {
            layers: vec![layer],
            config,
            manifest,
        })
    }

    /// Every blob the manifest names: the layers, then the config.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().chain(std::iter::once(&self.config))
    }
}

/// The path inside the image without its leading `/`.
fn check_path(path: &str) -> Result<&str, Error> {
    let rest = path.strip_prefix('/').unwrap_or_default();
    let ok = !rest.is_empty()
        && rest.len() < 100
        && rest
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(rest)
    } else {
        Err(Error::Invalid {
            field: "path",
            value: path.to_owned(),
            allowed: "an absolute path of at most 99 characters of a-z, A-Z, 0-9 and - _ . /, such as \"/sample-app\", with no empty, \".\" or \"..\" part".to_owned(),
        })
    }
}

fn check_user(user: &str) -> Result<(), Error> {
    let numeric = |s: &str| !s.is_empty() && s.len() <= 10 && s.chars().all(|c| c.is_ascii_digit());
    let ok = match user.split_once(':') {
        Some((u, g)) => numeric(u) && numeric(g),
        None => numeric(user),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "user",
            value: user.to_owned(),
            allowed: "a numeric uid or uid:gid such as \"65532:65532\" (the image has no /etc/passwd to look names up in)".to_owned(),
        })
    }
}

/// The program must run in an image with nothing else in it: a 64-bit little-endian ELF
/// executable for `arch`, with no program interpreter (a dynamic one needs a loader and libc).
fn check_program(program: &[u8], arch: Architecture) -> Result<(), Error> {
    let invalid = |allowed: String| Error::Invalid {
        field: "program",
        value: format!("{} bytes", program.len()),
        allowed,
    };
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            program.get(at..at + 2)?.try_into().ok()?,
        ))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            program.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            program.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    if program.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(invalid(
            "a 64-bit little-endian ELF executable (this is not one)".to_owned(),
        ));
    }
    let machine = u16_at(18).unwrap_or_default();
    if machine != arch.elf_machine() {
        return Err(invalid(format!(
            "a program for {} (ELF machine {:#x}); this one is for machine {machine:#x}",
            arch.as_oci(),
            arch.elf_machine()
        )));
    }
    // Program headers: offset at 0x20, entry size at 0x36, count at 0x38.
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err(invalid(
            "a complete ELF header (it is cut short)".to_owned(),
        ));
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(i * usize::from(phentsize)));
        let Some(p_type) = at.and_then(u32_at) else {
            return Err(invalid(
                "a complete ELF file (its program headers are cut short)".to_owned(),
            ));
        };
        const PT_INTERP: u32 = 3;
        if p_type == PT_INTERP {
            let offset = at.and_then(|a| u64_at(a + 8)).unwrap_or_default();
            let size = at.and_then(|a| u64_at(a + 32)).unwrap_or_default();
            let interp = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(o, s)| program.get(o..o.checked_add(s)?))
                .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned())
                .unwrap_or_default();
            return Err(invalid(format!(
                "a statically linked program: this one needs the loader {interp} and its libraries, which the image does not have (build it with RUSTFLAGS=\"-C target-feature=+crt-static\" and an explicit --target)"
            )));
        }
    }
    Ok(())
}

/// The layer: `tmp/` (1777, programs may want it) and the program (0755), owned by root,
/// timestamps 0.
fn layer_tar(path: &str, program: &[u8]) -> Result<Vec<u8>, Error> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_path("tmp/").map_err(Error::Layer)?;
    dir.set_mode(0o1777);
    dir.set_size(0);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_mtime(0);
    dir.set_cksum();
    tar.append(&dir, std::io::empty()).map_err(Error::Layer)?;
    // Parent directories of the program, so unpackers need not invent them.
    let parts: Vec<&str> = path.split('/').collect();
    for depth in 1..parts.len() {
        let mut parent = tar::Header::new_ustar();
        parent.set_entry_type(tar::EntryType::Directory);
        parent
            .set_path(format!("{}/", parts[..depth].join("/")))
            .map_err(Error::Layer)?;
        parent.set_mode(0o755);
        parent.set_size(0);
        parent.set_uid(0);
        parent.set_gid(0);
        parent.set_mtime(0);
        parent.set_cksum();
        tar.append(&parent, std::io::empty())
            .map_err(Error::Layer)?;
    }
    let mut file = tar::Header::new_ustar();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_path(path).map_err(Error::Layer)?;
    file.set_mode(0o755);
    file.set_size(program.len() as u64);
    file.set_uid(0);
    file.set_gid(0);
    file.set_mtime(0);
    file.set_cksum();
    tar.append(&file, program).map_err(Error::Layer)?;
    tar.into_inner().map_err(Error::Layer)
}

/// The headers of a static ELF executable for `architecture` and nothing else: it passes
/// [`Image::build`]'s checks but does not run. For tests of code that builds and pushes images.
pub fn placeholder_program(architecture: Architecture) -> Vec<u8> {
    elf(architecture.elf_machine(), None)
}

/// An ELF file for `machine`: a 64-byte header and one PT_LOAD program header; `interp` adds
/// a PT_INTERP naming a loader (a dynamically linked program).
fn elf(machine: u16, interp: Option<&str>) -> Vec<u8> {
    let phnum: u16 = if interp.is_some() { 2 } else { 1 };
    let mut b = vec![0u8; 64];
    b[..6].copy_from_slice(b"\x7fELF\x02\x01");
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
    let mut load = vec![0u8; 56];
    load[..4].copy_from_slice(&1u32.to_le_bytes());
    b.extend(load);
    if let Some(interp) = interp {
        let offset = 64 + 56 * 2;
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&3u32.to_le_bytes());
        ph[8..16].copy_from_slice(&(offset as u64).to_le_bytes());
        ph[32..40].copy_from_slice(&((interp.len() + 1) as u64).to_le_bytes());
        b.extend(ph);
        b.extend(interp.as_bytes());
        b.push(0);
    }
    b.extend(b"placeholder, not code");
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read as _;

    use super::*;

    fn spec() -> ImageSpec {
        ImageSpec::new(elf(0x3e, None), "/sample-app", Architecture::Amd64)
    }

    #[test]
    fn the_same_program_gives_the_same_digests() {
        let a = Image::build(&spec()).unwrap();
        let b = Image::build(&spec()).unwrap();
        assert_eq!(a, b);
        let mut other = spec();
        other.program.push(1);
        assert_ne!(
            Image::build(&other).unwrap().manifest.digest,
            a.manifest.digest
        );
    }

    #[test]
    fn the_layer_holds_the_program_executable_and_the_config_names_it() {
        let image = Image::build(&spec()).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&image.layers[0].data[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mtime = entry.header().mtime().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((path, mode, mtime, data.len()));
        }
        assert_eq!(
            found,
            [
                ("tmp/".to_owned(), 0o1777, 0, 0),
                ("sample-app".to_owned(), 0o755, 0, spec().program.len())
            ]
        );
        let config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["config"]["Entrypoint"][0], "/sample-app");
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["rootfs"]["diff_ids"][0], sha256_digest(&tar));
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest.data).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config.digest);
        assert_eq!(manifest["layers"][0]["digest"], image.layers[0].digest);
        assert_eq!(
            manifest["layers"][0]["size"],
            image.layers[0].data.len() as u64
        );
    }

    #[test]
    fn a_nested_path_gets_its_directories() {
        let mut s = spec();
        s.path = "/usr/local/bin/app".into();
        let image = Image::build(&s).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&image.layers[0].data[..])
            .read_to_end(&mut tar)
            .unwrap();
        let paths: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/app"
            ]
        );
    }

    #[test]
    fn programs_that_cannot_run_in_an_empty_image_are_refused() {
        let mut s = spec();
        s.program = elf(0x3e, Some("/lib64/ld-linux-x86-64.so.2"));
        let err = Image::build(&s).unwrap_err().to_string();
        assert!(
            err.contains("needs the loader /lib64/ld-linux-x86-64.so.2"),
            "{err}"
        );
        assert!(err.contains("+crt-static"), "{err}");
        s.program = elf(0xb7, None);
        let err = Image::build(&s).unwrap_err().to_string();
        assert!(
            err.contains("a program for amd64 (ELF machine 0x3e); this one is for machine 0xb7"),
            "{err}"
        );
        s.program = b"#!/bin/sh\necho hi\n".to_vec();
        let err = Image::build(&s).unwrap_err().to_string();
        assert!(err.starts_with("program = \"18 bytes\": a 64-bit"), "{err}");
        let mut arm = spec();
        arm.architecture = Architecture::Arm64;
        arm.program = elf(0xb7, None);
        assert!(Image::build(&arm).is_ok());
    }

    #[test]
    fn bad_paths_and_users_are_refused() {
        for path in ["sample-app", "/", "/a/../b", "/a//b", "/a b", ""] {
            let mut s = spec();
            s.path = path.into();
            let err = Image::build(&s).unwrap_err().to_string();
            assert!(err.starts_with(&format!("path = {path:?}:")), "{err}");
        }
        for user in ["root", "", "1:", ":1", "1:2:3"] {
            let mut s = spec();
            s.user = user.into();
            let err = Image::build(&s).unwrap_err().to_string();
            assert!(err.starts_with(&format!("user = {user:?}:")), "{err}");
        }
    }
}
