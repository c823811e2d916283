//! Model storage: a directory holding each node's own artifacts and the cache of node
//! outputs by fingerprint, which can be packaged into one archive with metadata and
//! loaded again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The file at the top of an archive that says what it holds.
const METADATA: &str = "metadata.json";

/// A model storage directory; see the module docs.
#[derive(Debug, Clone)]
pub struct ModelStorage {
    dir: PathBuf,
}

impl ModelStorage {
    /// The storage in `dir`, made when missing.
    pub fn at(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("cache"))?;
        fs::create_dir_all(dir.join("nodes"))?;
        Ok(Self { dir })
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node `node`'s own directory (not made until the node asks for it). Any name maps
    /// to one plain directory name, so a node cannot reach outside the storage.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        let plain: String = node
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let digest = hex(&Sha256::digest(node.as_bytes())[..4]);
        self.dir.join("nodes").join(format!("{plain}-{digest}"))
    }

    /// The output stored for `fingerprint`, if any (an unreadable entry counts as none).
    pub fn cached(&self, fingerprint: &str) -> Option<Value> {
        let bytes = fs::read(self.cache_file(fingerprint)).ok()?;
        let mut entry: Value = serde_json::from_slice(&bytes).ok()?;
        entry.get_mut("output").map(Value::take)
    }

    /// Stores node `node`'s `output` under `fingerprint`, whole or not at all.
    pub fn store(&self, fingerprint: &str, node: &str, output: &Value) -> io::Result<()> {
        let entry = serde_json::json!({ "node": node, "output": output });
        let file = self.cache_file(fingerprint);
        let partial = file.with_extension("partial");
        fs::write(&partial, serde_json::to_vec(&entry)?)?;
        fs::rename(partial, file)
    }

    fn cache_file(&self, fingerprint: &str) -> PathBuf {
        self.dir.join("cache").join(format!("{fingerprint}.json"))
    }

    /// Packages the storage into one gzipped tar archive at `archive`, with `metadata`
    /// (what the run was: its graph, targets, fingerprints) at its top.
    pub fn package(&self, archive: &Path, metadata: &Value) -> io::Result<()> {
        let file = fs::File::create(archive)?;
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        let text = serde_json::to_vec_pretty(metadata)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, METADATA, text.as_slice())?;
        tar.append_dir_all("storage", &self.dir)?;
        tar.into_inner()?.finish()?.sync_all()
    }

    /// Unpacks `archive` (made by [`package`](Self::package)) into `into`, answering
    /// its storage and metadata. Entries that would land outside `into` are refused.
    pub fn unpack(archive: &Path, into: &Path) -> io::Result<(Self, Value)> {
        fs::create_dir_all(into)?;
        let file = fs::File::open(archive)?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for entry in tar.entries()? {
            let mut entry = entry?;
            // `unpack_in` refuses paths that climb out of `into`.
            if !entry.unpack_in(into)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: an entry would land outside {}",
                        archive.display(),
                        into.display()
                    ),
                ));
            }
        }
        let text = fs::read(into.join(METADATA)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: no {METADATA} in the archive: {e}", archive.display()),
            )
        })?;
        let metadata = serde_json::from_slice(&text)?;
        Ok((Self::at(into.join("storage"))?, metadata))
    }
}

/// A value's fingerprint: SHA-256 of its canonical JSON (object keys sorted), with a
/// label saying what it is of.
pub(crate) struct Fingerprint(Sha256);

impl Fingerprint {
    pub(crate) fn new(label: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"guild.graph.v1\0");
        hash.update(label.as_bytes());
        hash.update(b"\0");
        Self(hash)
    }

    pub(crate) fn text(mut self, text: &str) -> Self {
        self.0.update((text.len() as u64).to_le_bytes());
        self.0.update(text.as_bytes());
        self
    }

    pub(crate) fn value(self, value: &Value) -> Self {
        let mut canonical = String::new();
        write_canonical(&mut canonical, value);
        self.text(&canonical)
    }

    pub(crate) fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, &map[key]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_key_order_and_see_every_value() {
        let a = serde_json::json!({"x": 1, "y": [1, {"b": 2, "a": 1}]});
        let b = serde_json::json!({"y": [1, {"a": 1, "b": 2}], "x": 1});
        let c = serde_json::json!({"y": [1, {"a": 1, "b": 3}], "x": 1});
        let print = |v: &Value| Fingerprint::new("t").value(v).finish();
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a), print(&c));
        assert_ne!(
            Fingerprint::new("t").text("ab").text("c").finish(),
            Fingerprint::new("t").text("a").text("bc").finish()
        );
    }

    #[test]
    fn node_directories_stay_inside_the_storage() {
        let storage = ModelStorage {
            dir: PathBuf::from("/s"),
        };
        for name in ["../../etc", "a/b", ".", "..", ""] {
            let dir = storage.node_dir(name);
            assert_eq!(dir.parent(), Some(Path::new("/s/nodes")), "{name:?}");
            let last = dir.file_name().unwrap().to_str().unwrap();
            assert!(!last.starts_with('.'), "{name:?} -> {last}");
        }
        assert_ne!(storage.node_dir("a/b"), storage.node_dir("a_b"));
    }
}
